"""Helpers shared by the test modules: records, events, land/tick/materialize shortcuts."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import requests
import sqlalchemy as sa

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.records import DEFAULT_RULE, RecordError, clean, get_rule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.definitions import defs
from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.ingestion.partitions import (
    farm_day_key,
)
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource
from feedlot_pipeline.lambdas import s3_handler
from feedlot_pipeline.local.services import (
    wait_for_port,
)
from feedlot_pipeline.warehouse.assets import historico_consumo
from feedlot_pipeline.warehouse.loading import load_objects
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline.worker.runtime import run_args


# from core.test_failures
def inbox(url: str, expected: int, timeout: float = 5.0) -> list[dict]:
    """Failure documents in the inbox (consumed), waiting up to ``timeout`` for ``expected``."""
    sqs = client("sqs")
    found: list[dict] = []
    deadline = datetime.now().timestamp() + timeout
    while len(found) < expected and datetime.now().timestamp() < deadline:
        for msg in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            found.append(json.loads(msg["Body"]))  # raw delivery: the document itself
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
    return found


# from ingestion.test_landing
CLIENTS = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}


# from ingestion.test_landing
NOW = datetime(2023, 1, 5, 12, 0, tzinfo=timezone.utc)


# from ingestion.test_landing
def record(client_code: str = "FazendaUm", day: str = "2023-01-01", lote: str = "1") -> dict:
    return {
        "id_curral": "25994051003275",
        "id_raca": "28551700000020",
        "id_lote": lote,
        "peso_entrada": 234.941,
        "peso_medio": 360.341,
        "data": f"{day} 00:00:00 UTC",
        "quantidade_animais": "51",
        "dia_confinamento": "66",
        "consumo_real": 9.076451,
        "cod_cliente": client_code,
    }


# from ingestion.test_landing
def receive_all(queue_url: str) -> list[dict]:
    sqs = client("sqs")
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return out
        out.extend(batch)


# from ingestion.test_sensor
def tick(
    instance: dg.DagsterInstance, settings, cursor: str | None = None, publish_map: bool = True
) -> dg.SensorResult:
    """One evaluation of consumption_events_sensor; the client map is published first (as
    ``client_map_sensor`` does) unless ``publish_map`` is False."""
    from feedlot_pipeline.core import client_map

    if publish_map and client_map.fetch(settings.lake_bucket) is None:
        client_map.publish(settings.lake_bucket, CLIENTS)
    sensor = defs.resolve_sensor_def("consumption_events_sensor")
    queue = SensorQueueResource(queue=settings.sensor_queue, dlq=settings.sensor_dlq)
    context = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        resources={"sensor_queue": queue, "lake": LakeResource(bucket=settings.lake_bucket)},
        definitions=defs,
    )
    result = sensor.evaluate_tick(context)
    return result


# from ingestion.test_sensor
def queue_depth(url: str) -> int:
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


# from ingestion.test_sensor
def land(settings, event_id: str, records: list) -> None:
    land_records(
        records,
        source="sns",
        event_id=event_id,
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )


# from lambdas.test_s3_handler
@dataclass
class Drops:
    settings: object
    prov: object
    capture_url: str

    @property
    def bucket(self) -> str:
        return self.settings.landing_bucket  # type: ignore[attr-defined]

    def events(self) -> list[dict]:
        """The S3 event notifications published since the last call, oldest first."""
        return [json.loads(m["Body"]) for m in receive_all(self.capture_url)]

    def deliver(self) -> list[dict]:
        """Invoke the handler with each captured event; the handler's results."""
        return [s3_handler.handler(event, Context()) for event in self.events()]

    def put(self, key: str, body: bytes, **kwargs: object) -> dict:
        return client("s3").put_object(Bucket=self.bucket, Key=key, Body=body, **kwargs)

    def lake_keys(self) -> dict[str, str]:
        """Raw objects of the lake: key → ETag."""
        s3 = client("s3")
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.lake_bucket  # type: ignore[attr-defined]
        ):
            out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
        return out

    def notices(self) -> list[LandingNotice]:
        return [
            LandingNotice.parse(m["Body"])
            for m in receive_all(self.prov.queue_url)  # type: ignore[attr-defined]
        ]


# from lambdas.test_s3_handler
def make_drops(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Drops:
    """The ``drops`` fixture's work, for other modules' fixtures (needs ``moto_endpoint``)."""
    tag = uuid.uuid4().hex[:8]
    settings, prov = request.getfixturevalue("aws")  # unique topic, queues and stream names
    sqs = client("sqs")
    capture = sqs.create_queue(QueueName=f"t{tag}-capture")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=capture, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns").subscribe(
        TopicArn=prov.file_drops_topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return Drops(settings, prov, capture)


# from lambdas.test_s3_handler
def jsonl(records: list) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


# from lambdas.test_s3_handler
def csv_bytes(records: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


# from lambdas.test_sns_handler
class Context:
    aws_request_id = "req-1"
    function_name = "feedlot-sns-landing"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:feedlot-sns-landing"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


# from lambdas.test_sns_handler
def sns_event(message: str, message_id: str | None = None, **attributes: str) -> dict:
    topic = "arn:aws:sns:us-east-1:123456789012:feedlot-consumption-records"
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic}:sub",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id or str(uuid.uuid4()),
                    "TopicArn": topic,
                    "Subject": None,
                    "Message": message,
                    "Timestamp": "2023-01-05T12:00:00.000Z",
                    "SignatureVersion": "1",
                    "Signature": "x",
                    "SigningCertUrl": "https://example.invalid/cert.pem",
                    "UnsubscribeUrl": "https://example.invalid/unsub",
                    "MessageAttributes": {
                        k: {"Type": "String", "Value": v} for k, v in attributes.items()
                    },
                },
            }
        ]
    }


# from local.test_api_gateway
SQLI = "x'); DROP TABLE historico_consumo; --"


# from local.test_api_gateway
def hostile_requests() -> list[tuple[str, Any, int]]:
    """(what, body, expected status): every hostile input of the issue, through the API."""
    good = record(lote="100")
    deep: Any = "leaf"
    for _ in range(100):
        deep = {"n": deep}
    deeper: Any = "leaf"
    for _ in range(300):
        deeper = [deeper]
    return [
        (
            "SQL injection in every text field",
            [
                {**record(lote="200"), "cod_cliente": f"FazendaUm{SQLI}"},
                {**record(lote="201"), "id_curral": SQLI},
                {**record(lote="202"), "id_raca": SQLI},
                {**record(lote="203"), "id_lote": SQLI},
                {**record(lote="204"), "data": f"2023-01-01{SQLI}"},
                {**record(lote="205"), "peso_medio": SQLI},
                {**record(lote="206"), "quantidade_animais": SQLI},
                {**record(lote="207"), "obs": SQLI},  # an extra field: ignored, record loads
                {**record("Robert'); DROP TABLE clientes;--", lote="208")},  # registered client
            ],
            202,
        ),
        (
            "path traversal and / in client names",
            [
                record("../../../etc/passwd", lote="300"),
                record("FazendaUm/../../fazenda_dois", lote="301"),
                record("/", lote="302"),
                record("..", lote="303"),
                record("Fazenda/Tres", lote="304"),  # registered client with a '/'
            ],
            202,
        ),
        ("path traversal in the idempotency key", [record(lote="305")], 400),
        ("non-UTF-8 bytes", b'[{"cod_cliente": "Fazenda\xff\xfeUm"}]', 400),
        ("10 MB body", b"[" + b" " * (10 * 1024 * 1024) + b"]", 413),
        ("deeply nested JSON (over 1024 levels)", "[" * 100_000 + "]" * 100_000, 400),
        ("value nested 300 levels inside a record", [record(lote="402"), {"obs": deeper}], 400),
        (
            "deeply nested values inside records",
            [{**record(lote="400"), "obs": deep}, {**record(lote="401"), "id_lote": deep}],
            202,
        ),
        (
            "numbers as strings",
            [
                {**record(lote="500"), "peso_medio": "380.5", "consumo_real": " 9.5 "},
                {**record(lote="501"), "peso_entrada": "1e2", "dia_confinamento": "+7"},
                {**record(lote="502"), "peso_medio": "3,5"},
                {**record(lote="503"), "quantidade_animais": "5.5"},
            ],
            202,
        ),
        ("NaN literal", '[{"peso_medio": NaN}]', 400),
        ("Infinity literal", '[{"peso_medio": Infinity}]', 400),
        ("number beyond a double", '[{"peso_medio": 1e999}]', 400),
        (
            "NaN/Infinity as strings",
            [
                {**record(lote="600"), "peso_medio": "NaN"},
                {**record(lote="601"), "consumo_real": "Infinity"},
                {**record(lote="602"), "peso_entrada": "-inf"},
            ],
            202,
        ),
        (
            "dates in other formats and time zones",
            [
                {**record(lote="700"), "data": "2023-01-01T21:30:00-03:00"},  # → 2023-01-02 UTC
                {**record(lote="701"), "data": "2023-01-01T10:00:00Z"},
                {**record(lote="702"), "data": "2023-01-01"},
                {**record(lote="703"), "data": "2023-01-01T10:00:00+05:30"},
                {**record(lote="704"), "data": "01/01/2023"},
                {**record(lote="705"), "data": "2023-01-01 00:00:00"},  # naive: ambiguous
                {**record(lote="706"), "data": "2023-02-30 00:00:00 UTC"},
                {**record(lote="707"), "data": 1672531200},
                {**record(lote="708"), "data": "1999-01-01 00:00:00 UTC"},  # before partitions
            ],
            202,
        ),
        ("empty array", "[]", 400),
        ("array of empty things", [[], {}], 202),
        ("duplicates within a request", [good, good, record(lote="101")], 202),
        ("duplicate of an earlier request", [good], 202),
    ]


# from local.test_api_gateway
def load_noticed_partitions(
    settings: Settings, warehouse_url: str, notices: list[LandingNotice]
) -> tuple[Counter[str], Counter[str]]:
    """Load every partition the notices name with the asset's own loader; each must reconcile
    (landed = loaded + rejected). Returns the summed counts and the rejection codes."""
    lake = LakeResource(bucket=settings.lake_bucket)
    rule = get_rule(settings.consumo_meta_rule)
    totals: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    with Warehouse(warehouse_url) as wh:
        for fazenda, dia in sorted({(n.fazenda, date.fromisoformat(n.dia)) for n in notices}):
            keys = [o.key for o in lake.partition_objects(fazenda, dia)]
            outcome = load_objects(
                wh, lake, keys, clients=wh.clients(), rule=rule, partition=(fazenda, dia)
            )
            report = outcome.report
            assert report.landed == report.loaded + report.rejected
            assert outcome.partitions[(fazenda, dia)].checks.passed
            totals.update(
                landed=report.landed,
                loaded=report.loaded,
                inserted=report.inserted,
                rejected=report.rejected,
            )
            codes.update(report.rejected_by_code)
    return totals, codes


# from local.test_stack
STACK_VARS = (
    "FEEDLOT_MOTO_PORT",
    "FEEDLOT_PG_PORT",
    "FEEDLOT_LAMBDA_PORT",
    "FEEDLOT_WAREHOUSE_URL",
    "FEEDLOT_DAGSTER_STORAGE_URL",
    "FEEDLOT_STATE_DIR",
    "FEEDLOT_SNS_HANDLER",
    "FEEDLOT_INGEST_API_PORT",
    "FEEDLOT_INGEST_API_KEY",
    "FEEDLOT_SSM_AGENT_PORT",
    "AWS_ENDPOINT_URL_SSM",
)


# from local.test_stack
PORT_VARS = (
    "FEEDLOT_MOTO_PORT",
    "FEEDLOT_PG_PORT",
    "FEEDLOT_LAMBDA_PORT",
    "FEEDLOT_INGEST_API_PORT",
    "FEEDLOT_SSM_AGENT_PORT",
)


def free_ports(variables: tuple[str, ...] = PORT_VARS) -> dict[str, int]:
    """A distinct free port for each variable (a developer's `make dev` may hold the defaults)."""
    from feedlot_pipeline.local.services import free_port

    chosen: dict[str, int] = {}
    for var in variables:
        port = free_port()
        while port in chosen.values():
            port = free_port()
        chosen[var] = port
    return chosen


def own_stack_env(state_dir: Path) -> dict[str, str]:
    """Environment for a stack of a test's own (tools started as subprocesses): no variable of the
    user's shell stack, every service on a free port (a developer's `make dev` may hold each
    default one), the warehouse on FEEDLOT_TEST_DATABASE_URL's server when set."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FEEDLOT_", "AWS_", "DAGSTER_"))
    }
    env.update(FEEDLOT_STATE_DIR=str(state_dir), FEEDLOT_SENSOR_INTERVAL_SECONDS="2")
    env.update({var: str(port) for var, port in free_ports().items()})
    server = os.environ.get("FEEDLOT_TEST_DATABASE_URL")
    if server:
        from feedlot_pipeline_tests.conftest import _new_pg_database

        env["FEEDLOT_WAREHOUSE_URL"] = _new_pg_database(server)
    return env


# from warehouse.test_assets
NOW = datetime(2023, 1, 5, tzinfo=timezone.utc)


# from warehouse.test_assets
DAY = date(2023, 1, 1)


# from warehouse.test_assets
def batch() -> list:
    good = [record(lote=str(i)) for i in range(5)]
    bad = [
        {**record(lote="90"), "peso_medio": -1},
        {k: v for k, v in record(lote="91").items() if k != "id_raca"},
        {**record(lote="92"), "quantidade_animais": "abc"},
    ]
    return [*good, good[0], *bad]  # good[0] twice: a duplicate inside the batch


# from warehouse.test_assets
def expected_valid(records: list) -> int:
    ids = set()
    for raw in records:
        with contextlib.suppress(RecordError):
            ids.add(clean(raw, CLIENTS, DEFAULT_RULE, "k", NOW)[0])
    return len(ids)


# from warehouse.test_assets
def materialize(instance, settings, warehouse_url, fazenda="fazenda_um", day=DAY, retries=False):
    """historico_consumo of one partition, in process. Transient failures are not retried unless
    asked for (then FEEDLOT_LOAD_RETRIES): a test that fails a load on purpose would otherwise
    wait out the load's backoff."""
    from feedlot_pipeline.warehouse.loading import RETRIES_TAG

    return dg.materialize(
        [raw_consumption, historico_consumo],
        partition_key=str(farm_day_key(fazenda, day)),
        instance=instance,
        resources={
            "lake": LakeResource(bucket=settings.lake_bucket),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
        selection=[historico_consumo.key],
        raise_on_error=False,
        tags=None if retries else {RETRIES_TAG: "0"},
    )


# from warehouse.test_assets
def mat_metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("historico_consumo")
    return {k: v.value for k, v in mat.metadata.items()}


# from worker.conftest
PIPES_WORKER = Path(__file__).parent / "worker" / "pipes_worker.py"


# from worker.conftest
AGENT_POLL_SECONDS = 0.2


# from worker.conftest
@dataclass(frozen=True)
class WorkerStack:
    instance_id: str
    volume_id: str
    tag_key: str
    tag_value: str
    endpoint: str
    state_dir: Path
    workdir: Path
    log: Path
    pid: int

    def health(self) -> dict:
        return requests.get(f"{self.endpoint}/health", timeout=5).json()

    def worker_command(self) -> str:
        return f"{sys.executable} {PIPES_WORKER}"


# from worker.conftest
def start_agent(instance_id: str, state_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_SSM"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feedlot_pipeline.local.ssm_agent",
                "--instance-id",
                instance_id,
                "--state-dir",
                str(state_dir),
                "--port",
                str(port),
                "--poll-seconds",
                str(AGENT_POLL_SECONDS),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    wait_for_port(port, 30, proc, "SSM agent")
    return proc


# from worker.conftest
def stop_agent(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# from worker.conftest
def alive(pid: int) -> bool:
    """Running (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# from worker.conftest
def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# from worker.conftest
def put_spec(bucket: str, key: str, spec: dict) -> str:
    from feedlot_pipeline.core.aws import client

    client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(spec).encode())
    return f"s3://{bucket}/{key}"


# from worker.test_bulk_import
FEEDLOT = Path(sys.executable).with_name("feedlot")


# from worker.test_bulk_import
def worker_command(*args: str) -> list[str]:
    """The installed console script when present (what SSM runs), else ``python -m``."""
    if FEEDLOT.exists():
        return [str(FEEDLOT), *args]
    return [sys.executable, "-m", "feedlot_pipeline.tools.cli", *args]


# from worker.test_bulk_import
def run_worker(
    input_uri: str,
    output_uri: str,
    workdir: Path,
    job_id: str,
    extra_env: dict[str, str] | None = None,
    *more: str,
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")}
    env.update(extra_env or {})
    return subprocess.run(
        worker_command(
            *run_args("bulk_import", input_uri, output_uri, job_id, str(workdir)), *more
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# from worker.test_bulk_import
def db_counts(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM historico_consumo")).scalar_one()
            by_code = dict(
                conn.execute(
                    sa.text(
                        "SELECT reason_code, count(*) FROM historico_consumo_rejeitados "
                        "GROUP BY reason_code"
                    )
                ).all()
            )
            bad_keys = conn.execute(
                sa.text(
                    "SELECT count(*) FROM historico_consumo WHERE raw_object_key NOT LIKE "
                    "'historico_diario/' || fazenda || '/' || to_char(data AT TIME ZONE 'UTC', "
                    "'YYYY/MM/DD') || '/worker-%'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return {"rows": rows, "rejected_by_code": by_code, "rows_off_partition": bad_keys}


# from core.test_metrics (and observability/, lambdas/)
def metric_stats(
    namespace: str, name: str, minutes: float = 30, **dims: str
) -> dict[str, float] | None:
    """Sum, SampleCount, Minimum and Maximum of one metric series over the last ``minutes``, read
    back from CloudWatch (moto) with GetMetricStatistics; None when it has no data."""
    from datetime import timedelta

    now = datetime.now(timezone.utc)
    points = client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - timedelta(minutes=minutes),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Sum", "SampleCount", "Minimum", "Maximum"],
    )["Datapoints"]
    if not points:
        return None
    return {
        "Sum": sum(p["Sum"] for p in points),
        "SampleCount": sum(p["SampleCount"] for p in points),
        "Minimum": min(p["Minimum"] for p in points),
        "Maximum": max(p["Maximum"] for p in points),
    }


# from core.test_metrics (and observability/, lambdas/)
def metric_names(namespace: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """(metric name, sorted dimensions) of every series in ``namespace`` (ListMetrics)."""
    out = set()
    for page in client("cloudwatch").get_paginator("list_metrics").paginate(Namespace=namespace):
        for metric in page["Metrics"]:
            dims = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
            out.add((metric["MetricName"], dims))
    return out


# from analytics (the analytics layer's tests)
@dataclass(frozen=True)
class AnalyticsEnv:
    settings: Settings
    targets: Any  # analytics.targets.AnalyticsTargets
    events_queue_url: str  # subscribed to the processed-events topic (raw delivery)
    warehouse_url: str


# from analytics
def consumo_record(
    client_code: str = "FazendaUm",
    day: str = "2023-01-01",
    lote: str = "1",
    curral: str = "25994051003275",
    real: float = 6.5,
    animals: int = 51,
    peso_medio: float = 360.0,
) -> dict:
    """A valid record whose consumo_meta will be peso_medio × 1.76 % (6.336 kg at 360 kg)."""
    return {
        **record(client_code, day, lote),
        "id_curral": curral,
        "consumo_real": real,
        "quantidade_animais": str(animals),
        "peso_medio": peso_medio,
    }


# from analytics
def load_records(
    env: AnalyticsEnv, records: list, event_id: str = "e1", correlation_id: str | None = None
) -> list[tuple[str, date]]:
    """Land ``records`` in the raw zone and load their partitions with the warehouse's loader;
    the (fazenda, dia) partitions loaded, sorted."""
    notices = land_records(
        records,
        source="sns",
        event_id=event_id,
        clients=CLIENTS,
        settings=env.settings,
        received_at=NOW,
        correlation_id=correlation_id,
    )
    parts = sorted({(n.fazenda, date.fromisoformat(n.dia)) for n in notices})
    lake = LakeResource(bucket=env.settings.lake_bucket)
    rule = get_rule(env.settings.consumo_meta_rule)
    from feedlot_pipeline.warehouse.loading import load_objects

    with Warehouse(env.warehouse_url) as wh:
        for fazenda, dia in parts:
            load_objects(
                wh,
                lake,
                [o.key for o in lake.partition_objects(fazenda, dia)],
                clients=wh.clients(),
                rule=rule,
                partition=(fazenda, dia),
            )
    return parts


# from analytics
def read_notices(queue_url: str, expected: int, timeout: float = 5.0) -> list[dict]:
    """Partition-loaded notices on the events queue (consumed), waiting for ``expected``."""
    sqs = client("sqs")
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        for msg in sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            found.append(json.loads(msg["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
    return found


# from analytics
def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    s3 = client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def median_request_seconds(call: Callable[[], object], count: int = 15) -> float:
    """Median time of ``count`` calls made one after another on a kept-open connection."""
    call()  # the connection is open from here on
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# Linux delays an ACK by at least 40 ms: a reply whose second write waits for it takes that long.
NAGLE_DELAY_SECONDS = 0.040
