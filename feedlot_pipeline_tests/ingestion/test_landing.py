"""Landing raw records in the lake (moto server) and notifying the sensor queue."""

from __future__ import annotations

from datetime import date

import orjson

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.ingestion.landing import envelope, land_records, split_message
from feedlot_pipeline_tests.helpers import CLIENTS, NOW, receive_all, record


def test_split_message_accepts_array_object_json_lines_and_envelope() -> None:
    assert split_message('[{"a":1},{"a":2}]') == ([{"a": 1}, {"a": 2}], None)
    assert split_message('{"a":1}') == ([{"a": 1}], None)
    assert split_message('{"a":1}\n{"a":2}\nnot json') == ([{"a": 1}, {"a": 2}, "not json"], None)
    assert split_message("garbage") == (["garbage"], None)
    body = envelope([b'{"a":1}', b'"x"'], "run-1-000001").decode()
    assert split_message(body) == ([{"a": 1}, "x"], "run-1-000001")
    assert split_message('{"records": [{"a": 1}]}') == ([{"a": 1}], None)
    # Not envelopes: other keys beside records, records not a list; an unusable id is ignored.
    assert split_message('{"records": [1], "id_lote": "1"}') == (
        [{"records": [1], "id_lote": "1"}],
        None,
    )
    assert split_message('{"records": {"a": 1}}') == ([{"records": {"a": 1}}], None)
    assert split_message('{"records": [], "correlation_id": 7}') == ([], None)
    assert split_message(envelope([], "x" * 257).decode()) == ([], None)


def test_batch_lands_one_object_per_partition_and_notifies(aws) -> None:
    settings, prov = aws
    batch = [
        record(lote="1"),
        record(lote="2"),
        record("FazendaDois", lote="3"),
        record(day="2023-01-02", lote="4"),
        record("FazendaX", lote="5"),  # unknown client: kept, in the unrouted partition
        "not a record",
    ]
    notices = land_records(
        batch, source="sns", event_id="msg-1", clients=CLIENTS, settings=settings, received_at=NOW
    )
    keys = sorted(n.key for n in notices)
    assert keys == [
        "historico_diario/_unrouted/2023/01/01/sns-msg-1.jsonl",
        "historico_diario/_unrouted/2023/01/05/sns-msg-1.jsonl",
        "historico_diario/fazenda_dois/2023/01/01/sns-msg-1.jsonl",
        "historico_diario/fazenda_um/2023/01/01/sns-msg-1.jsonl",
        "historico_diario/fazenda_um/2023/01/02/sns-msg-1.jsonl",
    ]
    s3 = client("s3")
    body = s3.get_object(Bucket=settings.lake_bucket, Key=keys[3])["Body"].read()
    assert [orjson.loads(line)["id_lote"] for line in body.splitlines()] == ["1", "2"]
    assert sum(n.records for n in notices) == len(batch)

    sent = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert sorted(n.key for n in sent) == keys


def test_redelivery_lands_nothing_twice(aws) -> None:
    settings, prov = aws
    for _ in range(2):
        land_records(
            [record()],
            source="sns",
            event_id="same",
            clients=CLIENTS,
            settings=settings,
            received_at=NOW,
        )
    listed = client("s3").list_objects_v2(Bucket=settings.lake_bucket)["Contents"]
    assert len(listed) == 1
    # Both deliveries notify; the sensor recognises the second as already recorded.
    assert len(receive_all(prov.queue_url)) == 2


def test_hostile_farm_and_event_id_stay_inside_the_raw_prefix(aws) -> None:
    settings, _ = aws
    notices = land_records(
        [record("../../etc")],
        source="sns/../x",
        event_id="../../../escape",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    (notice,) = notices
    assert notice.key.startswith("historico_diario/_unrouted/2023/01/01/")
    assert ".." not in notice.key
    assert notice.key.count("/") == 5


def test_date_outside_partitions_is_kept_unrouted(aws) -> None:
    settings, _ = aws
    (notice,) = land_records(
        [record(day="1999-12-31")],
        source="sns",
        event_id="old",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    assert (notice.fazenda, notice.dia) == ("_unrouted", date(2023, 1, 5).isoformat())
