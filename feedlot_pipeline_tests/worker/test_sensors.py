"""large_file_sensor against the real large-file queue on the moto server.

Until the EC2 worker's ``worker_bulk_import_job`` exists, a stand-in job with an asset of the same
name and config (``input_uri``) shows the run requests are runnable. As in ``test_sensor.py`` the
tests do the daemon's part themselves: they run each requested run, then tick again.
"""

import json

import dagster as dg
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.sensors import RUN_KEY_TAG
from feedlot_pipeline.lambdas import s3_handler
from feedlot_pipeline.worker.resources import LargeFileQueueResource
from feedlot_pipeline.worker.sensors import SENSOR_NAME, build_large_file_sensor
from feedlot_pipeline_tests.helpers import (
    Context,
    Drops,
    inbox,
    jsonl,
    make_drops,
    queue_depth,
    record,
)

IMPORTED: list[str] = []


class BulkImportConfig(dg.Config):
    input_uri: str


@dg.asset(name="worker_bulk_import")
def stand_in_bulk_import(config: BulkImportConfig) -> None:
    IMPORTED.append(config.input_uri)


stand_in_job = dg.define_asset_job("worker_bulk_import_job", selection=[stand_in_bulk_import])
SENSOR = build_large_file_sensor(stand_in_job)
DEFS = dg.Definitions(assets=[stand_in_bulk_import], jobs=[stand_in_job], sensors=[SENSOR])


@pytest.fixture()
def drops(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> Drops:
    return make_drops(monkeypatch, request)


@pytest.fixture()
def instance():
    IMPORTED.clear()
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        definitions=DEFS,
        resources={"large_file_queue": LargeFileQueueResource.from_settings(Settings())},
    )
    return DEFS.resolve_sensor_def(SENSOR_NAME).evaluate_tick(context)


def run_requests(instance: dg.DagsterInstance, result) -> None:
    """What the daemon does with the tick's run requests: launch them (here, in process)."""
    job = DEFS.resolve_job_def("worker_bulk_import_job")
    for request in result.run_requests:
        outcome = job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
        )
        assert outcome.success


def large_file(drops: Drops, monkeypatch, key: str = "incoming/huge.jsonl") -> dict:
    """Drop a file above the limit and let the S3 Lambda hand it off; its large_file message."""
    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "100")
    drops.put(key, jsonl([record(lote=str(i)) for i in range(5)]))
    events = drops.events()
    for event in events:
        s3_handler.handler(event, Context())
    return events[-1]


def test_large_file_becomes_one_worker_run(drops: Drops, instance, monkeypatch) -> None:
    event = large_file(drops, monkeypatch, "incoming/big drop.jsonl")
    s3_handler.handler(event, Context())  # a repeated ObjectCreated: a second identical message
    url = drops.prov.large_file_queue_url
    assert queue_depth(url) == 2

    first = tick(instance)
    (request,) = first.run_requests
    uri = f"s3://{drops.bucket}/incoming/big drop.jsonl"
    assert request.job_name == "worker_bulk_import_job"
    assert request.run_config == {"ops": {"worker_bulk_import": {"config": {"input_uri": uri}}}}
    assert request.tags["feedlot/input_uri"] == uri
    assert request.tags["feedlot/trigger"] == SENSOR_NAME
    assert (
        request.run_key.startswith("file-") and request.tags["feedlot/event_id"] == request.run_key
    )
    assert queue_depth(url) == 2  # nothing deleted before the run is recorded

    run_requests(instance, first)
    assert [uri] == IMPORTED
    second = tick(instance, first.cursor)
    assert second.run_requests == []
    assert queue_depth(url) == 0
    runs = instance.get_run_records(dg.RunsFilter(tags={"feedlot/input_uri": uri}))
    assert len(runs) == 1  # visible in Dagster: the run carries the file


def test_redelivered_message_after_the_run_requests_nothing(drops, instance, monkeypatch) -> None:
    event = large_file(drops, monkeypatch)
    first = tick(instance)
    run_requests(instance, first)
    tick(instance, first.cursor)
    assert queue_depth(drops.prov.large_file_queue_url) == 0
    s3_handler.handler(event, Context())  # the same object announced again, later
    again = tick(instance)
    assert again.run_requests == []
    assert queue_depth(drops.prov.large_file_queue_url) == 0


def test_unrecorded_tick_loses_nothing(drops: Drops, instance, monkeypatch) -> None:
    large_file(drops, monkeypatch)
    lost = tick(instance)  # the daemon dies before storing this tick
    receipt = json.loads(lost.cursor)["pending"][0]["receipt"]
    client("sqs").change_message_visibility(
        QueueUrl=drops.prov.large_file_queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
    )
    retried = tick(instance)
    assert [r.run_key for r in retried.run_requests] == [r.run_key for r in lost.run_requests]


def test_poison_messages_go_to_the_dlq_with_reasons(drops: Drops, instance, monkeypatch) -> None:
    sqs = client("sqs")
    url = drops.prov.large_file_queue_url
    good = {
        "type": "large_file",
        "version": 1,
        "bucket": drops.bucket,
        "key": "incoming/x.jsonl",
        "size": 10,
        "etag": "abc",
        "event_id": "file-1",
    }
    bad = [
        "{not json",
        json.dumps({**good, "version": 2}),
        json.dumps({**good, "key": "../../etc/passwd"}),
        json.dumps({**good, "bucket": "another-bucket"}),
        json.dumps({**good, "event_id": "a/b"}),
        json.dumps({k: v for k, v in good.items() if k != "size"}),
    ]
    for body in bad:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(good))
    result = tick(instance)
    assert [r.run_key for r in result.run_requests] == ["file-1"]
    dead = []
    while True:
        got = sqs.receive_message(
            QueueUrl=drops.prov.large_file_dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        dead.extend(got)
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert len(reasons) == len(bad)
    assert {m["MessageAttributes"]["stage"]["StringValue"] for m in dead} == {"large_file_sensor"}
    # Each one is also a failure document on the failure topic, with its reason.
    docs = inbox(drops.prov.failures_inbox_url, len(bad))
    assert len(docs) == len(bad)
    assert {(d["source"], d["stage"]) for d in docs} == {("sensor", "large_file_sensor")}
    assert sorted(d["reason"] for d in docs) == reasons
    for expected in (
        "Invalid JSON",
        "version: Input should be 1",
        "outside the landing bucket",
        "event_id",
        "size",
    ):
        assert any(expected in r for r in reasons), expected
    assert queue_depth(url) == 1  # only the good message, not yet acknowledged
