# Dagster inspects annotations at definition time: no postponed annotations here.
"""consumption_events_sensor: landing notices on the sensor queue become batch runs.

Per tick (the protocol of ``queue_sensor``):

1. acknowledge the notices whose batch run an earlier tick recorded;
2. if a batch run is still queued or running, stop here: notices wait in the queue and the next
   run takes them all, so the number of runs follows the time a run takes, not the number of
   farms or days touched;
3. drain a bounded batch and verify every notice: a valid contract, the lake bucket, a day that
   has a partition, a farm in ``clientes`` (the published client map) or already registered, and
   an object key under the partition it claims. Anything else goes to the dead-letter queue with
   its reason. Whether the object exists is left to the batch run, which reads it anyway and
   parks the notice of an object that is gone (``queue_sensor.park_gone_objects``): a HEAD per
   notice here cost one S3 request per record and, on a busy lake, made ticks of 40 s;
4. register new farms and request ONE run of the batch job with every verified object, grouped
   by farm × day partition (split only above ``MAX_OBJECTS_PER_RUN``).

A notice left undeleted reappears after the queue's visibility timeout; the batch run skips
objects its ledger says are loaded, so a redelivery costs a lookup and writes nothing.
"""

import hashlib
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import dagster as dg

from feedlot_pipeline.core import client_map
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.records import UNROUTED_FARM
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.batches import batch_run_config
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    farm_day_key,
    farm_day_partitions,
    farms_partitions,
)
from feedlot_pipeline.ingestion.queue_sensor import QueueMessage, QueueTick
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource

RUN_KEY_TAG = "dagster/run_key"
STAGE = "consumption_events_sensor"
LANE_TAG = "feedlot/lane"
STREAM_LANE = "stream"
MAX_OBJECTS_PER_RUN = 20_000
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def run_recorded(instance: dg.DagsterInstance, run_key: str) -> bool:
    """Whether a run with this run key exists (the daemon stored the tick that requested it)."""
    return bool(instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


def batch_in_flight(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """The id of a streaming batch run that is queued or running, if there is one."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=list(IN_FLIGHT)), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def batch_run_key(keys: Iterable[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"batch-{digest}"


class NoticeVerifier:
    """Decides, for one tick, which notices name an object of a known farm's partition."""

    def __init__(self, lake: LakeResource, known_farms: set[str], client_farms: set[str]):
        self.lake = lake
        self.known_farms = known_farms  # registered as partitions already
        self.client_farms = client_farms  # present in clientes (the published map)
        self.days = farm_day_partitions.get_partitions_def_for_dimension(DAY_DIMENSION)

    def check(self, notice: LandingNotice) -> str | None:
        """Why the notice cannot be used (without touching S3); None when it can."""
        if notice.bucket != self.lake.bucket:
            return f"notice names bucket {notice.bucket!r}, not the lake bucket"
        try:
            date.fromisoformat(notice.dia)
        except ValueError:
            return f"day {notice.dia!r} is not a date"
        if not self.days.has_partition_key(notice.dia):
            return f"day {notice.dia} has no partition"
        farm = notice.fazenda
        if farm != UNROUTED_FARM and farm not in self.known_farms | self.client_farms:
            return f"farm {farm!r} is not in clientes (no client maps to it)"
        return None


def client_farms(lake: LakeResource) -> set[str] | None:
    """The farms ``clientes`` maps to, from the map published in the lake; None when no map was
    published yet (``client_map_sensor`` publishes it within a minute of the daemon starting,
    ``feedlot local up`` at once)."""
    doc = client_map.fetch(lake.bucket)
    return None if doc is None else set(doc.clients.values())


def verify(
    tick: QueueTick,
    messages: list[QueueMessage],
    verifier: NoticeVerifier,
    log: Any,
) -> dict[str, list[tuple[LandingNotice, QueueMessage]]]:
    """The usable notices by partition key; the others parked with their reason."""
    by_partition: dict[str, list[tuple[LandingNotice, QueueMessage]]] = {}
    for msg in messages:
        try:
            notice: LandingNotice = LandingNotice.parse(msg.body)
        except ValueError as err:
            tick.park(msg, str(err))
            log.warning(f"notice {msg.message_id} sent to the DLQ: {err}")
            continue
        reason = verifier.check(notice)
        if reason is not None:
            tick.park(msg, reason)
            log.warning(f"notice {msg.message_id} sent to the DLQ: {reason}")
            continue
        key = str(farm_day_key(notice.fazenda, notice.dia))
        by_partition.setdefault(key, []).append((notice, msg))
    return by_partition


def plan_runs(
    by_partition: Mapping[str, list[tuple[LandingNotice, QueueMessage]]],
    job_name: str,
    tick: QueueTick,
) -> list[dg.RunRequest]:
    """One run request per ``MAX_OBJECTS_PER_RUN`` objects; every message held by its run."""
    requests: list[dg.RunRequest] = []
    batch: dict[str, list[str]] = {}
    held: list[QueueMessage] = []
    count = 0

    def close() -> None:
        nonlocal batch, held, count
        if not batch:
            return
        run_key = batch_run_key(k for keys in batch.values() for k in keys)
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                job_name=job_name,
                run_config=batch_run_config(batch),
                tags={
                    LANE_TAG: STREAM_LANE,
                    "feedlot/trigger": STAGE,
                    "feedlot/partitions": str(len(batch)),
                    "feedlot/objects": str(count),
                },
            )
        )
        for msg in held:
            tick.hold(msg, run_key)
        batch, held, count = {}, [], 0

    for key in sorted(by_partition):
        items = by_partition[key]
        objects = sorted({n.key for n, _ in items})
        if count and count + len(objects) > MAX_OBJECTS_PER_RUN:
            close()
        batch[key] = objects
        held.extend(m for _, m in items)
        count += len(objects)
    close()
    return requests


def build_consumption_events_sensor(job: Any) -> dg.SensorDefinition:
    """The sensor, bound to the batch job that loads the noticed objects."""
    settings = Settings()

    @dg.sensor(
        name=STAGE,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains landing notices from the sensor queue into one batch run per tick "
        "(all noticed partitions together), verifying each notice first.",
    )
    def consumption_events_sensor(
        context: dg.SensorEvaluationContext,
        sensor_queue: SensorQueueResource,
        lake: LakeResource,
    ) -> dg.SensorResult:
        instance = context.instance
        tick = sensor_queue.tick(context.cursor, STAGE, max_messages=settings.sensor_max_notices)
        tick.acknowledge(lambda run_key: run_recorded(instance, run_key))
        running = batch_in_flight(instance, job.name)
        if running is not None:
            return dg.SensorResult(
                cursor=tick.next_cursor(),
                skip_reason=f"batch run {running} is still queued or running; notices wait",
            )
        farms = client_farms(lake)
        if farms is None:
            return dg.SensorResult(
                cursor=tick.next_cursor(),
                skip_reason="no client map in the lake yet: notices wait until client_map_sensor "
                "publishes it",
            )
        messages = tick.drain()
        if not messages:
            return dg.SensorResult(cursor=tick.next_cursor())
        known = set(instance.get_dynamic_partitions(farms_partitions.name))
        verifier = NoticeVerifier(lake, known, farms)
        by_partition = verify(tick, messages, verifier, context.log)
        requests = plan_runs(by_partition, job.name, tick)
        new_farms = sorted(
            {split_farm(k) for k in by_partition} - known  # every one verified above
        )
        context.log.info(
            f"notices: {tick.counts.summary()}; {len(by_partition)} partition(s) in "
            f"{len(requests)} batch run(s)" + (f"; new farms {new_farms}" if new_farms else "")
        )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=(
                [farms_partitions.build_add_request(new_farms)] if new_farms else []
            ),
            cursor=tick.next_cursor(),
        )

    return consumption_events_sensor


def split_farm(partition_key: str) -> str:
    return farm_day_partitions.get_partition_key_from_str(partition_key).keys_by_dimension[
        "fazenda"
    ]
