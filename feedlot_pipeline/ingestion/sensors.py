"""consumption_events_sensor: turn landing notices on the sensor queue into partitioned runs.

Per tick it
1. deletes the notices whose runs an earlier tick recorded (never before: a tick's results are
   stored by Dagster after the function returns, so deletion waits for the next tick);
2. drains up to ``max_notices`` notices; an unparseable one goes to the dead-letter queue with
   its reason; one already recorded (redelivered) is deleted and requests nothing;
3. registers new farms, records each landing as a ``raw_consumption`` materialization, and
   requests one run per (farm, day), however many notices that partition received.
A notice left undeleted reappears after the queue's visibility timeout and takes step 2's
"already recorded" path, so a crash anywhere loses nothing and duplicates nothing.
"""

import hashlib
import json
import time
from collections import defaultdict
from datetime import date
from typing import Any

import dagster as dg

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.failures import report_failure
from feedlot_pipeline.core.lake import LandingNotice
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import RAW_CONSUMPTION
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    farm_day_key,
    farm_day_partitions,
    farms_partitions,
)
from feedlot_pipeline.ingestion.resources import SensorQueueResource

RUN_KEY_TAG = "dagster/run_key"
PENDING_MAX_AGE_SECONDS = 25  # below the queue's 30 s visibility timeout
RECORDED_LOOKBACK = 1000  # materializations per partition searched for a redelivered notice


def _run_key(partition: str, keys: list[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:20]
    return f"{partition}:{digest}"


def _recorded_keys(instance: dg.DagsterInstance, partition: str) -> set[str]:
    """Object keys already recorded as raw_consumption landings of one partition."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_CONSUMPTION, asset_partitions=[partition]),
        limit=RECORDED_LOOKBACK,
    )
    keys = set()
    for record in result.records:
        mat = record.asset_materialization
        if mat is not None and "object_key" in mat.metadata:
            keys.add(str(mat.metadata["object_key"].value))
    return keys


def _run_recorded(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _to_dlq(
    sqs: Any,
    dlq_url: str,
    body: str,
    reason: str,
    message_id: str,
    stage: str = "consumption_events_sensor",
) -> None:
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=body if body else "<empty>",
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": reason[:1000]},
            "stage": {"DataType": "String", "StringValue": stage},
            "original_message_id": {"DataType": "String", "StringValue": message_id},
        },
    )


def park_poison(
    sqs: Any, queue_url: str, dlq: str, dlq_url: str, msg: dict, reason: str, stage: str
) -> None:
    """A message no sensor can use: to the DLQ with its reason, off the queue, and reported.

    Sent before it is deleted, so a crash in between leaves it in both places, never in neither;
    then a failure document goes to the failure topic (``report_failure`` never raises).
    """
    _to_dlq(sqs, dlq_url, msg["Body"], reason, msg["MessageId"], stage)
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
    report_failure(
        source="sensor",
        stage=stage,
        reason=reason,
        payload=msg["Body"],
        event_id=msg["MessageId"],
        details={
            "dead_letter_queue": dlq,
            "receive_count": msg.get("Attributes", {}).get("ApproximateReceiveCount"),
        },
    )


def build_consumption_events_sensor(job: Any) -> dg.SensorDefinition:
    """The sensor, bound to the job that loads a farm × day partition."""
    settings = Settings()

    @dg.sensor(
        name="consumption_events_sensor",
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains landing notices from the sensor queue into farm × day runs.",
    )
    def consumption_events_sensor(
        context: dg.SensorEvaluationContext, sensor_queue: SensorQueueResource
    ) -> dg.SensorResult:
        instance = context.instance
        sqs = client("sqs")
        url = sensor_queue.url()
        cursor = json.loads(context.cursor) if context.cursor else {"pending": []}

        # 1. Delete what earlier ticks recorded.
        still_pending = []
        deleted = 0
        recorded_runs: dict[str, bool] = {}
        for item in cursor["pending"]:
            if item["run_key"] not in recorded_runs:
                recorded_runs[item["run_key"]] = _run_recorded(instance, item["run_key"])
            if recorded_runs[item["run_key"]]:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=item["receipt"])
                deleted += 1
            elif time.time() - item["at"] < PENDING_MAX_AGE_SECONDS:
                still_pending.append(item)
            # else: the receipt is stale; the notice reappears and is handled as redelivered.

        # 2. Drain a bounded batch.
        messages: list[dict] = []
        while len(messages) < settings.sensor_max_notices:
            batch = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, settings.sensor_max_notices - len(messages)),
                WaitTimeSeconds=0,
                AttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)

        by_partition: dict[str, list[tuple[LandingNotice, str]]] = defaultdict(list)
        poison = 0
        for msg in messages:
            try:
                notice = LandingNotice.from_json(msg["Body"])
                if not _day_exists(notice.dia):
                    raise ValueError(f"day {notice.dia} has no partition")
            except ValueError as err:
                park_poison(
                    sqs,
                    url,
                    sensor_queue.dlq,
                    sensor_queue.dlq_url(),
                    msg,
                    str(err),
                    "consumption_events_sensor",
                )
                context.log.warning(f"notice {msg['MessageId']} sent to the DLQ: {err}")
                poison += 1
                continue
            partition = str(farm_day_key(notice.fazenda, notice.dia))
            by_partition[partition].append((notice, msg["ReceiptHandle"]))

        # 3. Record landings and request one run per partition.
        known_farms = set(instance.get_dynamic_partitions(farms_partitions.name))
        new_farms: set[str] = set()
        events: list[dg.AssetMaterialization] = []
        run_requests: list[dg.RunRequest] = []
        redelivered = 0
        for partition, items in by_partition.items():
            recorded = _recorded_keys(instance, partition)
            fresh: dict[str, LandingNotice] = {}
            receipts: list[str] = []
            for notice, receipt in items:
                if notice.key in recorded:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=receipt)
                    redelivered += 1
                    continue
                fresh.setdefault(notice.key, notice)
                receipts.append(receipt)
            if not fresh:
                continue
            farm = next(iter(fresh.values())).fazenda
            if farm not in known_farms:
                new_farms.add(farm)
            for notice in fresh.values():
                events.append(
                    dg.AssetMaterialization(
                        asset_key=RAW_CONSUMPTION,
                        partition=partition,
                        description=f"landed by {notice.source}",
                        metadata={
                            "object_key": notice.key,
                            "records": notice.records,
                            "source": notice.source,
                            "event_id": notice.event_id,
                            "correlation_id": notice.correlation_id or "",
                            "landed_at": notice.landed_at,
                        },
                    )
                )
            run_key = _run_key(partition, list(fresh))
            run_requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=partition,
                    tags={"feedlot/trigger": "consumption_events_sensor"},
                )
            )
            now = time.time()
            still_pending.extend({"receipt": r, "run_key": run_key, "at": now} for r in receipts)

        if messages or deleted:
            context.log.info(
                f"notices: {len(messages)} received, {deleted} acknowledged, {poison} to DLQ, "
                f"{redelivered} redelivered; {len(run_requests)} run(s) requested"
            )
        return dg.SensorResult(
            run_requests=run_requests,
            asset_events=events,
            dynamic_partitions_requests=(
                [farms_partitions.build_add_request(sorted(new_farms))] if new_farms else []
            ),
            cursor=json.dumps({"pending": still_pending}),
        )

    return consumption_events_sensor


def _day_exists(dia: str) -> bool:
    days = farm_day_partitions.get_partitions_def_for_dimension(DAY_DIMENSION)
    try:
        date.fromisoformat(dia)
        return days.has_partition_key(dia)
    except (ValueError, TypeError):
        return False
