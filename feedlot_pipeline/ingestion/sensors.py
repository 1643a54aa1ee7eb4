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
from collections import defaultdict
from datetime import date
from typing import Any

import dagster as dg

from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import RAW_CONSUMPTION
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    farm_day_key,
    farm_day_partitions,
    farms_partitions,
)
from feedlot_pipeline.ingestion.queue_sensor import QueueMessage
from feedlot_pipeline.ingestion.resources import SensorQueueResource

RUN_KEY_TAG = "dagster/run_key"
STAGE = "consumption_events_sensor"
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


def run_recorded(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether a run with this run key exists (the daemon stored the tick that requested it)."""
    return bool(instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def _landing_event(partition: str, notice: LandingNotice) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
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
        tick = sensor_queue.tick(context.cursor, STAGE, max_messages=settings.sensor_max_notices)
        tick.acknowledge(lambda run_key: run_recorded(instance, run_key))
        by_partition: dict[str, list[tuple[LandingNotice, QueueMessage]]] = defaultdict(list)
        for msg in tick.drain():
            try:
                notice = LandingNotice.parse(msg.body)
                if not _day_exists(notice.dia):
                    raise ValueError(f"day {notice.dia} has no partition")
            except ValueError as err:
                tick.park(msg, str(err))
                context.log.warning(f"notice {msg.message_id} sent to the DLQ: {err}")
                continue
            by_partition[str(farm_day_key(notice.fazenda, notice.dia))].append((notice, msg))

        known_farms = set(instance.get_dynamic_partitions(farms_partitions.name))
        new_farms: set[str] = set()
        events: list[dg.AssetMaterialization] = []
        run_requests: list[dg.RunRequest] = []
        for partition, items in by_partition.items():
            recorded = _recorded_keys(instance, partition)
            seen = [msg for notice, msg in items if notice.key in recorded]
            tick.ack_now(seen)
            fresh: dict[str, LandingNotice] = {}
            held = [(n, m) for n, m in items if n.key not in recorded]
            for notice, _ in held:
                fresh.setdefault(notice.key, notice)
            if not fresh:
                continue
            farm = next(iter(fresh.values())).fazenda
            if farm not in known_farms:
                new_farms.add(farm)
            events.extend(_landing_event(partition, notice) for notice in fresh.values())
            run_key = _run_key(partition, list(fresh))
            run_requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=partition,
                    tags={"feedlot/trigger": STAGE},
                )
            )
            for _, msg in held:
                tick.hold(msg, run_key)

        if tick.counts.received or tick.counts.acknowledged:
            context.log.info(
                f"notices: {tick.counts.summary()}; {len(run_requests)} run(s) requested"
            )
        return dg.SensorResult(
            run_requests=run_requests,
            asset_events=events,
            dynamic_partitions_requests=(
                [farms_partitions.build_add_request(sorted(new_farms))] if new_farms else []
            ),
            cursor=tick.next_cursor(),
        )

    return consumption_events_sensor


def _day_exists(dia: str) -> bool:
    days = farm_day_partitions.get_partitions_def_for_dimension(DAY_DIMENSION)
    try:
        date.fromisoformat(dia)
        return days.has_partition_key(dia)
    except (ValueError, TypeError):
        return False
