# Dagster inspects annotations at definition time: no postponed annotations here.
"""The warehouse domain's sensors.

- ``client_map_sensor``: keeps the published client map equal to the warehouse's ``clientes``.
- ``lake_sweep_sensor``: loads recent raw objects the load ledger does not have.

client_map_sensor:

The landing Lambdas and the consumption sensor route and verify records with the map published
in the lake (``core.client_map``), so landing never waits on the warehouse. Whoever changes
``clientes`` — `feedlot clients add`, SQL by hand, a migration — the map follows within a minute.
"""

from datetime import date, datetime, timedelta, timezone

import dagster as dg

from feedlot_pipeline.core import client_map
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.batches import batch_run_config
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.ingestion.sensors import (
    LANE_TAG,
    STREAM_LANE,
    batch_in_flight,
    batch_run_key,
)
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.store import Warehouse

INTERVAL_SECONDS = 60


@dg.sensor(
    name="client_map_sensor",
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes clientes (cod_cliente → fazenda) to the lake when it changes, for the "
    "landing Lambdas and the consumption sensor.",
)
def client_map_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    with warehouse.open() as wh:
        clients = wh.clients()
    current = client_map.digest(clients)
    if context.cursor == current:
        return dg.SkipReason("clientes unchanged since the last publication")
    published = client_map.fetch(lake.bucket)
    if published is None or published.digest != current:
        client_map.publish(lake.bucket, clients)
        context.log.info(f"published the client map: {len(clients)} client(s)")
    return dg.SensorResult(cursor=current)


def unloaded_objects(
    lake: LakeResource,
    wh: Warehouse,
    farms: list[str],
    days: list[date],
    min_age_seconds: int,
    now: datetime,
) -> dict[str, list[str]]:
    """Raw objects of those farms × days that the load ledger does not have, by partition key.

    Objects younger than ``min_age_seconds`` are left to their notices, still in flight.
    """
    found: dict[str, list[str]] = {}
    for fazenda in farms:
        for dia in days:
            objects = [
                o
                for o in lake.partition_objects(fazenda, dia)
                if (now - o.last_modified).total_seconds() >= min_age_seconds
            ]
            if not objects:
                continue
            loaded = wh.loaded_objects(o.key for o in objects)
            missing = sorted(o.key for o in objects if o.key not in loaded)
            if missing:
                found[str(farm_day_key(fazenda, dia))] = missing
    return found


def build_lake_sweep_sensor(job: dg.JobDefinition) -> dg.SensorDefinition:
    """The sweep, bound to the batch job that loads what it finds."""
    settings = Settings()

    @dg.sensor(
        name="lake_sweep_sensor",
        job=job,
        minimum_interval_seconds=settings.sweep_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loads the recent raw objects the load ledger does not have: a notice lost "
        "with a queue or a batch run that gave up never loses a record.",
    )
    def lake_sweep_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        s = Settings()
        running = batch_in_flight(context.instance, job.name)
        if running is not None:
            return dg.SkipReason(f"batch run {running} in flight; sweeping next time")
        now = datetime.now(timezone.utc)
        days = [now.date() + timedelta(days=d) for d in range(-s.sweep_lookback_days, 2)]
        farms = sorted(context.instance.get_dynamic_partitions(farms_partitions.name))
        with warehouse.open() as wh:
            objects = unloaded_objects(lake, wh, farms, days, s.sweep_min_age_seconds, now)
        if not objects:
            return dg.SkipReason(
                f"every raw object of {len(farms)} farm(s) × {len(days)} day(s) is loaded"
            )
        keys = [k for found in objects.values() for k in found]
        context.log.warning(
            f"{len(keys)} raw object(s) in {len(objects)} partition(s) were never loaded: "
            "loading them now"
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=batch_run_key(keys),
                    run_config=batch_run_config(objects),
                    tags={
                        LANE_TAG: STREAM_LANE,
                        "feedlot/trigger": "lake_sweep_sensor",
                        "feedlot/partitions": str(len(objects)),
                        "feedlot/objects": str(len(keys)),
                    },
                )
            ]
        )

    return lake_sweep_sensor
