# Dagster inspects annotations at definition time: no postponed annotations here.
"""Jobs of the warehouse domain.

- ``ingest_consumption_job``: rebuild chosen farm × day partitions (backfills, the UI, replay);
  one run per partition, as Dagster runs partitioned asset jobs.
- ``ingest_batch_job``: the streaming path. ``consumption_events_sensor`` launches one run per
  tick with every object it was notified of, whatever the number of partitions; the run loads them
  together and logs, per partition, the same materializations and check results a partition run
  would (raw_consumption, historico_consumo and its two checks). Its cost grows with records and
  ticks, not with partitions: a run's start-up, resources and queries are paid once per batch.
"""

import time
from collections import defaultdict
from datetime import datetime, timezone

import dagster as dg

from feedlot_pipeline.core.records import get_rule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.batches import BATCH_OP, NoticedObjects
from feedlot_pipeline.ingestion.partitions import split_key
from feedlot_pipeline.ingestion.queue_sensor import park_gone_objects
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource
from feedlot_pipeline.ingestion.sensors import LANE_TAG, STREAM_LANE
from feedlot_pipeline.warehouse.assets import historico_consumo
from feedlot_pipeline.warehouse.events import log_check_evaluations, log_materializations
from feedlot_pipeline.warehouse.loading import (
    emit_load_metrics,
    historico_materialization,
    load_objects,
    raw_materialization,
    retried_when_transient,
)
from feedlot_pipeline.warehouse.resources import WarehouseResource

# In-process: a partition run starts ~10 s sooner than with subprocess steps.
ingest_consumption_job = dg.define_asset_job(
    name="ingest_consumption_job",
    selection=dg.AssetSelection.assets(historico_consumo),
    executor_def=dg.in_process_executor,
    description="Rebuild one farm × day partition of historico_consumo from its raw objects.",
)


@dg.op(
    name=BATCH_OP,
    description="Load the noticed raw objects of every partition in the batch, check each "
    "partition, and record one materialization and check result per partition.",
)
def load_noticed_objects(
    context: dg.OpExecutionContext,
    config: NoticedObjects,
    lake: LakeResource,
    warehouse: WarehouseResource,
    sensor_queue: SensorQueueResource,
) -> dict:
    started = time.monotonic()
    keys = [k for found in config.objects.values() for k in found]
    rule = get_rule(Settings().consumo_meta_rule)
    context.log.info(f"batch of {len(keys)} object(s) in {len(config.objects)} partition(s)")
    with retried_when_transient(context), warehouse.open() as wh:
        outcome = load_objects(
            wh,
            lake,
            keys,
            clients=wh.clients(),
            rule=rule,
            skip_loaded=True,
            run_id=context.run_id,
        )
        committed = datetime.now(timezone.utc)
        rows = wh.partition_row_counts(outcome.partitions)
    loaded_at = time.monotonic()
    ordered = sorted(outcome.partitions.items())
    log_materializations(context, [raw_materialization(load) for _, load in ordered])
    log_materializations(
        context,
        [
            historico_materialization(load, rule, rows.get(where), context.run_id)
            for where, load in ordered
        ],
    )
    log_check_evaluations(context, [load.checks.evaluation() for _, load in ordered])
    failed = outcome.failed
    report = outcome.report
    context.log.info(
        f"loaded {report.landed} line(s) of {len(report.objects)} object(s) into "
        f"{len(outcome.partitions)} partition(s) in {loaded_at - started:.1f} s: "
        f"{report.inserted} new, {report.updated} replaced, {report.unchanged} unchanged, "
        f"{report.superseded} superseded, {report.rejected} rejected; "
        f"{len(outcome.skipped)} object(s) already loaded, {len(outcome.missing)} gone; "
        f"events logged in {time.monotonic() - loaded_at:.1f} s"
    )
    emit_load_metrics(context.job_name, time.monotonic() - started, outcome, row_time=committed)
    if outcome.missing:
        parked = park_gone_objects(
            sensor_queue.dlq,
            sensor_queue.dlq_url(),
            lake.bucket,
            outcome.missing,
            context.job_name,
            context.run_id,
        )
        context.log.warning(
            f"{parked} noticed object(s) gone before they could be read, their notices parked "
            f"in {sensor_queue.dlq}: {outcome.missing[:20]}"
        )
    for load in failed:
        context.log.error(
            f"{load.partition_key}: blocking checks failed; no downstream output for it in this "
            f"run ({load.checks.reconcile_metadata} / {load.checks.rows_metadata})"
        )
    return {
        "passed": sorted(
            load.partition_key for load in outcome.partitions.values() if load.checks.passed
        ),
        "failed": sorted(load.partition_key for load in failed),
    }


@dg.job(
    name="ingest_batch_job",
    description="The streaming path: load every noticed raw object of a sensor tick, whatever "
    "the number of farm × day partitions, with per-partition materializations and checks.",
    executor_def=dg.in_process_executor,
    tags={LANE_TAG: STREAM_LANE},
)
def ingest_batch_job() -> None:
    load_noticed_objects()


def partitions_of(objects: dict[str, list[str]]) -> dict[tuple[str, str], int]:
    """(fazenda, dia) → objects, for logs and tags."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for key, found in objects.items():
        fazenda, dia = split_key(key)
        out[(fazenda, dia.isoformat())] += len(found)
    return dict(out)
