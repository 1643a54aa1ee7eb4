# Dagster inspects annotations at definition time: no postponed annotations here.
"""Summaries follow the loads, in runs of their own: ``analytics_refresh_sensor`` →
``analytics_refresh_job``.

Every load path — streaming batches, a rebuild from the UI, ``feedlot replay``, the EC2 worker —
writes the load ledger (``historico_consumo_cargas``, ``loaded_at`` per raw object). The sensor
reads which farm × day partitions were loaded since its cursor and launches one run that
refreshes them all (``refresh_partitions``: summary, describe CSV, curated Parquet, Glue, notice),
whatever their number; never a run per partition.

Why beside the loads and not inside the batch run: the loads stay as fast as they are (a refresh
writes three objects and a notice per partition, 20–30 s for 1,000 partitions on the local
moto), and a refresh that fails (S3, Glue, SNS) fails its own run, retried by run retries,
without touching the load. A partition whose latest blocking check of historico_consumo failed is
left out (and named in the log); it is refreshed after a load that passes.
"""

import json
import os
import time
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from feedlot_pipeline.analytics.events import blocked_by_checks, log_partition_events
from feedlot_pipeline.analytics.partition import refresh_partitions
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.core.metrics import MetricsBuffer
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.ingestion.partitions import farm_day_key
from feedlot_pipeline.ingestion.sensors import LANE_TAG
from feedlot_pipeline.warehouse.loading import retried_when_transient
from feedlot_pipeline.warehouse.resources import WarehouseResource

JOB_NAME = "analytics_refresh_job"
ANALYTICS_LANE = "analytics"
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


class LoadedPartitions(dg.Config):
    """The partitions to refresh, as ``fazenda/yyyy-mm-dd``."""

    partitions: list[str]

    def pairs(self) -> list[tuple[str, date]]:
        out = []
        for item in self.partitions:
            fazenda, _, dia = item.partition("/")
            out.append((fazenda, date.fromisoformat(dia)))
        return out


@dg.op(
    name="refresh_loaded_partitions",
    description="Refresh the analytics of the loaded farm × day partitions: consumo_diario, "
    "describe CSV, curated Parquet + Glue partitions, the processed-events notice.",
)
def refresh_loaded_partitions(
    context: dg.OpExecutionContext,
    config: LoadedPartitions,
    warehouse: WarehouseResource,
    analytics: AnalyticsResource,
) -> None:
    started = time.monotonic()
    niceness = yield_the_cpu(AnalyticsSettings().analytics_refresh_nice)
    parts = config.pairs()
    blocked = {
        (f, d): failed
        for f, d in parts
        if (failed := blocked_by_checks(context.instance, str(farm_day_key(f, d))))
    }
    todo = [p for p in parts if p not in blocked]
    for (fazenda, dia), failed in sorted(blocked.items()):
        context.log.warning(
            f"{fazenda} {dia}: left out, historico_consumo failed {', '.join(failed)}"
        )
    context.log.info(
        f"refreshing {len(todo)} partition(s) ({len(blocked)} left out), at niceness {niceness}"
    )
    with retried_when_transient(context), warehouse.open() as wh:
        results = refresh_partitions(wh, analytics.targets(), todo, run_id=context.run_id)
    refreshed = time.monotonic()
    log_partition_events(context, results)
    failed_checks = sum(1 for r in results if not r.passed)
    context.log.info(
        f"refreshed {len(results)} partition(s) in {refreshed - started:.1f} s "
        f"({len(results) / max(refreshed - started, 1e-9):.1f}/s), events logged in "
        f"{time.monotonic() - refreshed:.1f} s; {failed_checks} with a failed check"
    )
    buffer = MetricsBuffer()
    buffer.add("SummaryDuration", refreshed - started, Job=context.job_name)
    buffer.flush()


def yield_the_cpu(increment: int) -> int:
    """Lower this run's CPU priority by ``increment`` (Unix niceness); the niceness it now has.

    A refresh of 1,000 partitions takes 25–70 s of a core; on a 2-core machine that also runs the
    loads, moto and the Lambda bridge, it took the core the loads needed (event → row p95 64–78 s
    at 100 records/s, 25 s with the lane off). At a lower priority it runs on what they leave.
    """
    if not hasattr(os, "nice"):  # not Unix
        return 0
    return os.nice(increment)  # 0 changes nothing; raising niceness is never refused


@dg.job(
    name=JOB_NAME,
    description="Analytics of the partitions loaded since the last refresh (launched by "
    "analytics_refresh_sensor): one run for any number of partitions.",
    executor_def=dg.in_process_executor,
    tags={LANE_TAG: ANALYTICS_LANE},
)
def analytics_refresh_job() -> None:
    refresh_loaded_partitions()


def plan(
    loaded: list[tuple[str, date]], max_partitions: int, until: datetime
) -> list[dg.RunRequest]:
    """Run requests of at most ``max_partitions`` partitions each."""
    keys = [f"{f}/{d.isoformat()}" for f, d in loaded]
    requests = []
    for start in range(0, len(keys), max_partitions):
        chunk = keys[start : start + max_partitions]
        requests.append(
            dg.RunRequest(
                run_key=f"analytics:{until.isoformat()}:{start}",
                job_name=JOB_NAME,
                run_config={
                    "ops": {"refresh_loaded_partitions": {"config": {"partitions": chunk}}}
                },
                tags={LANE_TAG: ANALYTICS_LANE, "feedlot/partitions": str(len(chunk))},
            )
        )
    return requests


FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def resting(instance: dg.DagsterInstance, max_duty: float, now: datetime) -> tuple[float, float]:
    """(seconds the last finished refresh ran, seconds left before the next may start).

    Keeps the analytics lane to ``max_duty`` of the time: at 1,000 streaming farms a refresh
    takes about a minute of a core, and back to back they leave the loads one core of two.
    The partitions loaded meanwhile are not lost: the cursor stays, the next refresh takes them.
    """
    if max_duty >= 1:
        return 0.0, 0.0
    records = instance.get_run_records(
        dg.RunsFilter(job_name=JOB_NAME, statuses=list(FINISHED)), limit=1
    )
    if not records or records[0].start_time is None or records[0].end_time is None:
        return 0.0, 0.0
    ran = max(0.0, records[0].end_time - records[0].start_time)
    until = records[0].end_time + ran * (1 / max_duty - 1)
    return ran, max(0.0, until - now.timestamp())


def build_analytics_refresh_sensor() -> dg.SensorDefinition:
    settings = AnalyticsSettings()

    @dg.sensor(
        name="analytics_refresh_sensor",
        job_name=JOB_NAME,
        minimum_interval_seconds=settings.analytics_refresh_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches one analytics run for every farm × day partition loaded since its "
        "last run (by the load ledger), whatever the load path.",
    )
    def analytics_refresh_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        s = AnalyticsSettings()
        if context.instance.get_run_records(
            dg.RunsFilter(job_name=JOB_NAME, statuses=list(IN_FLIGHT)), limit=1
        ):
            return dg.SkipReason("an analytics refresh is in flight; the next one takes the rest")
        now = datetime.now(timezone.utc)
        ran, rest = resting(context.instance, s.analytics_refresh_max_duty, now)
        if rest > 0:
            return dg.SkipReason(
                f"the last refresh ran {ran:.0f} s: resting {rest:.0f} s more "
                f"(FEEDLOT_ANALYTICS_REFRESH_MAX_DUTY={s.analytics_refresh_max_duty:g})"
            )
        until = now - timedelta(seconds=s.analytics_refresh_settle_seconds)
        cursor = json.loads(context.cursor) if context.cursor else {}
        since = (
            datetime.fromisoformat(cursor["until"])
            if "until" in cursor
            else now - timedelta(hours=s.analytics_refresh_lookback_hours)
        )
        if until <= since:
            return dg.SkipReason("nothing settled since the last refresh")
        with warehouse.open() as wh:
            loaded = wh.partitions_loaded_between(since, until)
        new_cursor = json.dumps({"until": until.isoformat()})
        if not loaded:
            return dg.SensorResult(
                cursor=new_cursor,
                skip_reason=dg.SkipReason(
                    f"no partition loaded in ({since:%H:%M:%S}, {until:%H:%M:%S}]"
                ),
            )
        requests = plan(loaded, s.analytics_refresh_max_partitions, until)
        context.log.info(f"{len(loaded)} partition(s) loaded since {since.isoformat()}")
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)

    return analytics_refresh_sensor
