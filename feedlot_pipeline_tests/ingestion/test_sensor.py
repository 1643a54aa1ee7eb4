"""consumption_events_sensor against a real SQS queue and lake bucket on the moto server.

The Dagster daemon stores a tick's partitions and runs after the sensor function returns; these
tests do that step themselves with the instance's public API, then tick again.
"""

from __future__ import annotations

import json

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from feedlot_pipeline.core import client_map
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.partitions import farms_partitions
from feedlot_pipeline.ingestion.sensors import LANE_TAG, RUN_KEY_TAG, STREAM_LANE
from feedlot_pipeline.warehouse.jobs import ingest_batch_job
from feedlot_pipeline_tests.helpers import CLIENTS, land, queue_depth, record, tick


def record_tick(instance: dg.DagsterInstance, result, status=dg.DagsterRunStatus.SUCCESS) -> None:
    """What the daemon does with a tick's result: partitions, then runs (a run key once)."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        if instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key})):
            continue
        create_run_for_test(
            instance,
            job_name=ingest_batch_job.name,
            run_config=request.run_config,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            status=status,
        )


def objects_of(request: dg.RunRequest) -> dict[str, list[str]]:
    return request.run_config["ops"]["load_noticed_objects"]["config"]["objects"]


def published(settings) -> None:
    client_map.publish(settings.lake_bucket, CLIENTS)


def test_one_batch_run_for_every_noticed_partition(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    for i in range(3):
        land(settings, f"m{i}", [record(lote=str(i))])
    land(settings, "other", [record("FazendaDois")])
    land(settings, "day2", [record(day="2023-01-02")])

    result = tick(instance, settings)
    (request,) = result.run_requests
    objects = objects_of(request)
    assert sorted(objects) == [
        "2023-01-01|fazenda_dois",
        "2023-01-01|fazenda_um",
        "2023-01-02|fazenda_um",
    ]
    assert len(objects["2023-01-01|fazenda_um"]) == 3
    assert request.tags[LANE_TAG] == STREAM_LANE and request.tags["feedlot/objects"] == "5"
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["fazenda_dois", "fazenda_um"]
    assert queue_depth(prov.queue_url) == 5  # nothing deleted before the run is recorded

    record_tick(instance, result)
    second = tick(instance, settings, result.cursor)
    assert second.run_requests == []
    assert queue_depth(prov.queue_url) == 0


def test_notices_wait_while_a_batch_is_in_flight(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    land(settings, "m1", [record()])
    first = tick(instance, settings)
    record_tick(instance, first, status=dg.DagsterRunStatus.STARTED)
    land(settings, "m2", [record(lote="2")])
    waiting = tick(instance, settings, first.cursor)
    assert waiting.run_requests == [] and "still queued or running" in str(waiting.skip_message)
    assert queue_depth(prov.queue_url) == 1  # m1 acknowledged, m2 waits in the queue
    (run,) = instance.get_run_records(dg.RunsFilter(job_name=ingest_batch_job.name))
    instance.report_run_canceled(run.dagster_run)
    after = tick(instance, settings, waiting.cursor)
    (request,) = after.run_requests
    assert list(objects_of(request)) == ["2023-01-01|fazenda_um"]


def test_a_redelivered_notice_requests_the_same_run_again(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    land(settings, "m1", [record()])
    first = tick(instance, settings)
    record_tick(instance, first)
    tick(instance, settings, first.cursor)  # acknowledges
    assert queue_depth(prov.queue_url) == 0

    land(settings, "m1", [record()])  # SNS redelivers the same message: the same object
    again = tick(instance, settings)
    assert [r.run_key for r in again.run_requests] == [first.run_requests[0].run_key]
    record_tick(instance, again)  # the daemon skips a run key it has seen
    assert len(instance.get_run_records(dg.RunsFilter(job_name=ingest_batch_job.name))) == 1
    tick(instance, settings, again.cursor)
    assert queue_depth(prov.queue_url) == 0


def test_unacknowledged_notice_is_not_lost_when_the_tick_is_not_recorded(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    land(settings, "m1", [record()])
    lost = tick(instance, settings)  # the daemon dies before storing this tick
    assert len(lost.run_requests) == 1
    receipt = json.loads(lost.cursor)["pending"][0]["receipt"]
    client("sqs").change_message_visibility_batch(  # let the notice reappear now
        QueueUrl=prov.queue_url,
        Entries=[{"Id": "0", "ReceiptHandle": receipt, "VisibilityTimeout": 0}],
    )
    retried = tick(instance, settings)
    assert [list(objects_of(r)) for r in retried.run_requests] == [["2023-01-01|fazenda_um"]]


def test_stale_receipts_are_skipped_not_fatal(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    land(settings, "m1", [record()])
    first = tick(instance, settings)
    record_tick(instance, first)
    cursor = json.loads(first.cursor)
    cursor["pending"].append(
        {
            "receipt": "stale-receipt-from-before-a-restart",
            **{k: v for k, v in cursor["pending"][0].items() if k != "receipt"},
        }
    )
    after = tick(instance, settings, json.dumps(cursor))  # must not raise
    assert after.run_requests == [] and queue_depth(prov.queue_url) == 0


def test_poison_and_forged_notices_go_to_the_dlq_with_their_reason(aws, instance) -> None:
    settings, prov = aws
    published(settings)
    sqs = client("sqs")

    def notice(**changes) -> str:
        body = {
            "type": "raw_landing",
            "version": 1,
            "bucket": settings.lake_bucket,
            "key": "historico_diario/fazenda_um/2023/01/01/sns-ghost.jsonl",
            "fazenda": "fazenda_um",
            "dia": "2023-01-01",
            "records": 1,
            "source": "sns",
            "event_id": "ghost",
            "landed_at": "2023-01-05T12:00:00+00:00",
        }
        return json.dumps({**body, **changes})

    forged = [
        "{not json",
        '{"type":"raw_landing","version":1,"key":"../../etc/passwd"}',
        notice(),  # well-formed, object gone: the batch run parks it (warehouse/test_jobs)
        notice(bucket="etc"),
        notice(key="historico_diario/evil_farm/2023/01/01/sns-x.jsonl", fazenda="evil_farm"),
    ]
    for body in forged:
        sqs.send_message(QueueUrl=prov.queue_url, MessageBody=body)
    land(settings, "ok", [record()])
    result = tick(instance, settings)
    (request,) = result.run_requests
    assert list(objects_of(request)) == ["2023-01-01|fazenda_um"]
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["fazenda_um"]  # never evil_farm
    dead = []
    while batch := sqs.receive_message(
        QueueUrl=prov.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        dead.extend(batch)
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert len(reasons) == len(forged) - 1
    for expected in (
        "Invalid JSON",
        "not a valid raw_landing message",
        "not the lake bucket",
        "farm 'evil_farm' is not in clientes",
    ):
        assert any(expected in r for r in reasons), (expected, reasons)
    assert "evil_farm" not in instance.get_dynamic_partitions(farms_partitions.name)
    assert any(k.endswith("sns-ghost.jsonl") for k in objects_of(request)["2023-01-01|fazenda_um"])
    assert queue_depth(prov.queue_url) == 2  # the good and the ghost, held for their run


def test_without_a_client_map_notices_wait(aws, instance) -> None:
    settings, prov = aws
    land(settings, "m1", [record()])
    result = tick(instance, settings, publish_map=False)
    assert result.run_requests == [] and "no client map" in str(result.skip_message)
    assert queue_depth(prov.queue_url) == 1
