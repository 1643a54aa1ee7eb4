"""File drops end to end on the local wiring: boto3 upload → S3 notification → SNS → Lambda
bridge ``/s3`` → ``lambdas.s3_handler`` → raw zone + sensor queue → the real warehouse asset.

Also Firehose (moto's delivery stream writes into the input prefix, which raises the same
notification) and the hostile inputs of issue 3, each reconciled through ``historico_consumo``.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from datetime import date

import dagster as dg
import orjson
import pytest
from sqlalchemy import create_engine, text

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.files import read_all
from feedlot_pipeline.ingestion.partitions import farms_partitions
from feedlot_pipeline.lambdas import common
from feedlot_pipeline.local.lambda_bridge import LambdaBridge
from feedlot_pipeline_tests.helpers import (
    Drops,
    csv_bytes,
    jsonl,
    make_drops,
    mat_metadata,
    materialize,
    record,
)


@pytest.fixture()
def drops(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> Drops:
    return make_drops(monkeypatch, request)


@pytest.fixture()
def bridge(drops: Drops, warehouse_url: str, tmp_path):
    """The bridge, subscribed to the file-drops topic the way ``feedlot local up`` does."""
    common.reset_client_map()
    started = LambdaBridge(tmp_path, 0, retry_seconds=(0.05, 0.1)).start()
    sns = client("sns")
    arn = sns.subscribe(
        TopicArn=drops.prov.file_drops_topic_arn,
        Protocol="http",
        Endpoint=started.s3_endpoint,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    yield started
    sns.unsubscribe(SubscriptionArn=arn)
    started.stop(5)
    common.reset_client_map()


def settle(bridge: LambdaBridge, invocations: int, timeout: float = 60) -> None:
    """Wait until the bridge has finished ``invocations`` S3 invocations."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = bridge.s3_invoker.stats
        if stats.succeeded + stats.failed >= invocations and bridge.s3_invoker.wait_idle(0.1):
            return
        time.sleep(0.05)
    raise AssertionError(f"bridge stats after {timeout}s: {bridge.s3_invoker.stats}")


def test_upload_invokes_the_handler_and_notifies_the_sensor(drops: Drops, bridge) -> None:
    drops.put("incoming/farm one/day 1.jsonl", jsonl([record(lote="1"), record(lote="2")]))
    settle(bridge, 1)
    assert bridge.s3_invoker.stats.succeeded == 1
    notices = drops.notices()
    assert [(n.fazenda, n.dia, n.records, n.source) for n in notices] == [
        ("fazenda_um", "2023-01-01", 2, "file")
    ]
    health = bridge.health()["s3"]
    assert health["succeeded"] == 1 and health["handler"].endswith("s3_handler:handler")

    # Re-applying the notification configuration sends s3:TestEvent: invoked, nothing landed.
    s3 = client("s3")
    config = s3.get_bucket_notification_configuration(Bucket=drops.bucket)
    config.pop("ResponseMetadata")
    s3.put_bucket_notification_configuration(Bucket=drops.bucket, NotificationConfiguration=config)
    settle(bridge, 2)
    assert bridge.s3_invoker.stats.succeeded == 2 and drops.notices() == []


def test_firehose_objects_take_the_file_drop_path(drops: Drops, bridge) -> None:
    firehose = client("firehose")
    stream = drops.prov.firehose_stream_arn.rsplit("/", 1)[1]
    batch = [{"Data": orjson.dumps(record(lote=str(i))) + b"\n"} for i in range(3)]
    assert (
        firehose.put_record_batch(DeliveryStreamName=stream, Records=batch)["FailedPutCount"] == 0
    )
    settle(bridge, 1)
    (obj,) = client("s3").list_objects_v2(Bucket=drops.bucket, Prefix="incoming/firehose/")[
        "Contents"
    ]
    assert obj["Key"].startswith("incoming/firehose/")
    assert sum(n.records for n in drops.notices()) == 3


def test_failing_handler_is_recorded_after_retries(drops: Drops, bridge, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    drops.put("incoming/f.jsonl", jsonl([record()]))
    settle(bridge, 1)
    assert bridge.s3_invoker.stats.failed == 1
    (failure,) = (bridge.state_dir / "lambda-failures").glob("*.json")
    payload = orjson.loads(failure.read_bytes())
    assert payload["requestPayload"]["Records"][0]["eventSource"] == "aws:s3"
    assert payload["requestContext"]["approximateInvokeCount"] == 3


# --- hostile input ---------------------------------------------------------------------------

INJECTION = "x'); DROP TABLE historico_consumo; --"


def hostile_files() -> dict[str, bytes]:
    good = record(lote="100")
    deep = b'{"n":' * 2000 + b"{}" + b"}" * 2000  # valid JSON, deeper than orjson's 1024
    deep_record = orjson.dumps({**record(lote="500"), "cod_cliente": "@"}).replace(b'"@"', deep)
    return {
        "incoming/hostile/sql.jsonl": jsonl(
            [
                {**record(lote="200"), "cod_cliente": INJECTION},
                {**record(lote="201"), "id_curral": INJECTION},
                {**record(lote="202"), "data": INJECTION},
                {**record(lote="203"), "id_raca": "1 OR 1=1"},
                {**record(lote="204"), "peso_medio": INJECTION},
            ]
        ),
        "incoming/hostile/paths.json": orjson.dumps(
            [
                {**record(lote="300"), "cod_cliente": "../../etc/passwd"},
                {**record(lote="301"), "cod_cliente": "FazendaUm/../../x"},
                {**record(lote="302"), "cod_cliente": "fazenda_um/2023/01/01"},
            ]
        ),
        "incoming/../hostile/../traversal key.jsonl": jsonl([record(lote="303")]),
        "incoming/hostile/bytes.jsonl": b'{"cod_cliente": "Fazenda\xffUm"}\n' + jsonl([good]),
        "incoming/hostile/bytes.csv": csv_bytes([record(lote="400")])
        + b"25994051003275,28551700000020,401,1,2,2023-01-01 00:00:00 UTC,\xff,3,4,FazendaUm\n",
        "incoming/hostile/deep.json": b"[" + b"[" * 3000 + b"]" * 3000 + b"," + deep_record + b"]",
        "incoming/hostile/strings.csv.gz": gzip.compress(
            csv_bytes(
                [
                    record(lote="600"),  # numbers become strings in CSV: loaded
                    {**record(lote="601"), "peso_medio": "NaN"},
                    {**record(lote="602"), "consumo_real": "Infinity"},
                ]
            )
        ),
        "incoming/hostile/nan.jsonl": b'{"peso_medio": NaN, "cod_cliente": "FazendaUm"}\n'
        + b'{"consumo_real": Infinity}\n',
        "incoming/hostile/dates.jsonl": jsonl(
            [
                {**record(lote="700"), "data": "2023-01-01T02:00:00+03:00"},  # 2022-12-31 UTC
                {**record(lote="701"), "data": "2023-01-01T00:00:00Z"},
                {**record(lote="702"), "data": "01/01/2023"},
                {**record(lote="703"), "data": "2023-01-01 00:00:00"},  # no zone
                {**record(lote="704"), "data": "2023-02-30 00:00:00 UTC"},
            ]
        ),
        "incoming/hostile/empty.jsonl": b"",
        "incoming/hostile/empty.json": b"[ ]",
        "incoming/hostile/dupes-a.jsonl": jsonl([record(lote="800"), record(lote="800")]),
        "incoming/hostile/dupes-b.json": orjson.dumps([record(lote="800")]),
        "incoming/hostile/big.jsonl": jsonl(
            [record(lote=str(10_000 + i)) for i in range(40_000)]
        ),  # ~10 MB
    }


def test_hostile_file_drops_reconcile(drops: Drops, bridge, warehouse_url) -> None:
    files = hostile_files()
    assert len(files["incoming/hostile/big.jsonl"]) > 10_000_000
    s3 = client("s3")
    for key, body in files.items():
        s3.put_object(Bucket=drops.bucket, Key=key, Body=body)
    landed_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=drops.bucket)["Contents"]]
    settle(bridge, len(landed_keys), timeout=120)
    assert bridge.s3_invoker.stats.failed == 0
    expected_values = sum(len(read_all(body, key)) for key, body in files.items())

    notices = drops.notices()
    assert all(n.key.startswith("historico_diario/") for n in notices)
    assert sum(n.records for n in notices) == expected_values
    assert {n.fazenda for n in notices} <= {"fazenda_um", "_unrouted"}

    totals: Counter = Counter()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "_unrouted"])
        for fazenda, dia in sorted({(n.fazenda, n.dia) for n in notices}):
            result = materialize(
                instance, drops.settings, warehouse_url, fazenda, date.fromisoformat(dia)
            )
            assert result.success, (fazenda, dia)
            meta = mat_metadata(result)
            assert meta["landed"] == meta["loaded"] + meta["rejected"], (fazenda, dia, meta)
            totals.update({k: meta[k] for k in ("landed", "loaded", "rejected")})
    assert totals["landed"] == expected_values
    assert totals["landed"] == totals["loaded"] + totals["rejected"]

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        loaded = set(conn.execute(text("SELECT id_lote FROM historico_consumo")).scalars())
        rejected = Counter(
            conn.execute(text("SELECT reason_code FROM historico_consumo_rejeitados")).scalars()
        )
        days = dict(
            conn.execute(
                text("SELECT id_lote, data FROM historico_consumo WHERE id_lote LIKE '70%'")
            )
            .tuples()
            .all()
        )
    engine.dispose()
    # Loaded correctly: numbers as strings, CSV strings, the 10 MB file, zones converted to UTC.
    assert {"100", "303", "400", "600", "700", "701", "800"} <= loaded
    assert len({lote for lote in loaded if len(lote) == 5}) == 40_000
    assert days["700"].date() == date(2022, 12, 31) and days["701"].date() == date(2023, 1, 1)
    # Everything else rejected with a reason; repeats are no rejections (one row for lote 800).
    for lote in ("200", "201", "202", "203", "204", "300", "301", "302", "401", "500"):
        assert lote not in loaded
    for lote in ("601", "602", "702", "703", "704"):
        assert lote not in loaded
    assert rejected["duplicate"] == 0  # once within dupes-a, once across files: unchanged
    assert {
        "unknown_client",
        "invalid_id",
        "invalid_data",
        "invalid_number",
        "not_an_object",
    } <= set(rejected)
    # The injection reached the tables only as data.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == len(loaded)
    engine.dispose()
