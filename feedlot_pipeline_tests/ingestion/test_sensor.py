"""consumption_events_sensor against a real SQS queue on the moto server.

The Dagster daemon stores a tick's asset events and runs after the sensor function returns; these
tests do that step themselves with the instance's public API, then tick again.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.definitions import ingest_consumption_job
from feedlot_pipeline.ingestion.sensors import RUN_KEY_TAG
from feedlot_pipeline_tests.helpers import land, queue_depth, record, tick


def record_tick(instance: dg.DagsterInstance, result) -> None:
    """What the daemon does with a tick's result: partitions, asset events, runs."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    for request in result.run_requests:
        create_run_for_test(
            instance,
            job_name=ingest_consumption_job.name,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
        )


def test_coalesces_notices_into_one_run_per_partition(aws, instance) -> None:
    settings, prov = aws
    for i in range(3):
        land(settings, f"m{i}", [record(lote=str(i))])
    land(settings, "other", [record("FazendaDois")])

    result = tick(instance, settings)
    partitions = sorted(r.partition_key for r in result.run_requests)
    assert partitions == ["2023-01-01|fazenda_dois", "2023-01-01|fazenda_um"]
    assert len(result.asset_events) == 4
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == ["fazenda_dois", "fazenda_um"]
    # Nothing is deleted before the runs are recorded.
    assert queue_depth(prov.queue_url) == 4

    record_tick(instance, result)
    second = tick(instance, settings, result.cursor)
    assert second.run_requests == []
    assert queue_depth(prov.queue_url) == 0


def test_redelivered_notice_requests_nothing_new(aws, instance) -> None:
    settings, prov = aws
    land(settings, "m1", [record()])
    first = tick(instance, settings)
    assert len(first.run_requests) == 1
    record_tick(instance, first)
    tick(instance, settings, first.cursor)  # acknowledges
    assert queue_depth(prov.queue_url) == 0

    land(settings, "m1", [record()])  # SNS redelivers the same message
    again = tick(instance, settings)
    assert again.run_requests == []
    assert again.asset_events == []
    assert queue_depth(prov.queue_url) == 0


def test_unacknowledged_notice_is_not_lost_when_the_tick_is_not_recorded(aws, instance) -> None:
    settings, prov = aws
    land(settings, "m1", [record()])
    lost = tick(instance, settings)  # the daemon dies before storing this tick
    assert len(lost.run_requests) == 1
    client("sqs").change_message_visibility_batch(  # let the notice reappear now
        QueueUrl=prov.queue_url,
        Entries=[{"Id": "0", "ReceiptHandle": lost_cursor_receipt(lost), "VisibilityTimeout": 0}],
    )
    retried = tick(instance, settings)
    assert [r.partition_key for r in retried.run_requests] == ["2023-01-01|fazenda_um"]


def lost_cursor_receipt(result) -> str:
    import json

    return json.loads(result.cursor)["pending"][0]["receipt"]


def test_poison_notice_goes_to_dlq_with_reason(aws, instance) -> None:
    settings, prov = aws
    sqs = client("sqs")
    sqs.send_message(QueueUrl=prov.queue_url, MessageBody="{not json")
    sqs.send_message(
        QueueUrl=prov.queue_url,
        MessageBody='{"type":"raw_landing","version":1,"key":"../../etc/passwd"}',
    )
    land(settings, "ok", [record()])
    result = tick(instance, settings)
    assert len(result.run_requests) == 1
    dead = sqs.receive_message(
        QueueUrl=prov.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert len(reasons) == 2
    assert any("Invalid JSON" in r for r in reasons)
    assert any("not a valid raw_landing message" in r for r in reasons)
    assert queue_depth(prov.queue_url) == 1  # only the good, not yet acknowledged notice
