"""The issue's hostile inputs through the SNS source (the main job's path), end to end.

The same inputs the HTTP API test sends, as SNS messages: SNS itself refuses what cannot be a
message (over 256 KiB, not UTF-8), so those arrive as the text SNS would deliver. Every message
must land inside the raw zone or be refused by SNS, the handler must keep running, and after the
partitions are loaded landed = loaded + rejected, with the tables intact.
"""

from __future__ import annotations

import json

from sqlalchemy import create_engine, text

from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.lambdas import sns_handler
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import (
    Context,
    hostile_requests,
    load_noticed_partitions,
    receive_all,
    sns_event,
)

SNS_MAX_BYTES = 256 * 1024


def as_message(body: object) -> str | None:
    """The SNS Message for a request body; None when SNS would refuse to publish it."""
    if isinstance(body, bytes):
        try:
            message = body.decode("utf-8")
        except UnicodeDecodeError:
            return None  # SNS messages are UTF-8 text: Publish fails at the producer
    elif isinstance(body, str):
        message = body
    else:
        message = json.dumps(body)
    return message if len(message.encode()) <= SNS_MAX_BYTES else None


def test_hostile_messages_through_sns_land_inside_the_raw_zone_and_reconcile(
    aws, warehouse_url
) -> None:
    settings, prov = aws
    with Warehouse(warehouse_url) as wh:
        wh.add_client("Robert'); DROP TABLE clientes;--", "fazenda_bobby")
        wh.add_client("Fazenda/Tres", "fazenda_tres")

    refused_by_sns = []
    for what, body, _status in hostile_requests():
        message = as_message(body)
        if message is None:
            refused_by_sns.append(what)
            continue
        sns_handler.handler(sns_event(message), Context())  # never raises on bad data
    assert refused_by_sns == ["non-UTF-8 bytes", "10 MB body"]

    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert notices
    for notice in notices:
        parts = notice.key.split("/")
        assert parts[0] == "historico_diario" and len(parts) == 6 and ".." not in parts
    assert {n.fazenda for n in notices} == {
        "fazenda_um",
        "fazenda_bobby",
        "fazenda_tres",
        "_unrouted",
    }

    totals, codes = load_noticed_partitions(settings, warehouse_url, notices)
    assert totals["landed"] == sum(n.records for n in notices)
    # What SNS lets through and the API refuses as a whole (NaN literals, nesting beyond what
    # JSON parsers take) is landed as text here and rejected with its reason, never lost.
    # NaN and Infinity literals, 1e999, nesting beyond the parser: one text value each, kept
    # as a JSON string in the raw zone, rejected as not_an_object; `[[], {}]` adds its `[]`.
    assert codes["not_an_object"] >= 5
    for code in ("unknown_client", "invalid_id", "invalid_data", "invalid_number"):
        assert codes[code] > 0, code
    assert codes["duplicate"] == 0  # repeated records are unchanged, never rejections
    assert codes["partition_mismatch"] >= 1

    engine = create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM clientes")).scalar() == 4
            rows = conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar()
            bobby = conn.execute(
                text("SELECT cod_cliente FROM historico_consumo WHERE fazenda = 'fazenda_bobby'")
            ).scalars()
            assert list(bobby) == ["Robert'); DROP TABLE clientes;--"]  # stored verbatim
    finally:
        engine.dispose()
    assert rows == totals["inserted"]  # repeats are loaded as unchanged, once as a row
