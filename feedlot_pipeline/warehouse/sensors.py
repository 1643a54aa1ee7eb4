# Dagster inspects annotations at definition time: no postponed annotations here.
"""The warehouse domain's sensors.

- ``client_map_sensor``: keeps the published client map equal to the warehouse's ``clientes``.
- ``lake_sweep_sensor``: loads recent raw objects the load ledger does not have.

client_map_sensor:

The landing Lambdas and the consumption sensor route and verify records with the map published
in the lake (``core.client_map``), so landing never waits on the warehouse. Whoever changes
``clientes`` — `feedlot clients add`, SQL by hand, a migration — the map follows within a minute.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    batch_run_key,
)
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.store import Warehouse

INTERVAL_SECONDS = 60
TICK_SECONDS = 30  # lake_sweep_sensor: a pass in progress goes on this often
KEYS_LOGGED = 20


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


@dataclass
class SweepPass:
    """What one tick of the sweep saw: part of a pass over every farm, within the tick's budget."""

    found: dict[str, list[str]]  # partition key → raw objects the ledger does not have
    farms: list[str]  # the farms listed in this tick, in order
    listed: int  # objects old enough to judge
    after: str | None  # the last farm listed when the budget ran out; None: the pass is complete


def sweep_farms(
    lake: LakeResource,
    wh: Warehouse,
    farms: list[str],
    days: list[date],
    *,
    min_age_seconds: int,
    now: datetime,
    after: str | None = None,
    budget_seconds: float = 20.0,
    clock: Callable[[], float] = time.monotonic,
) -> SweepPass:
    """List the farms after ``after`` (sorted) until the budget is spent; the unloaded objects.

    One listing per farm covers all of ``days``; one ledger query per 1,000 keys. Objects younger
    than ``min_age_seconds`` are left to their notices, still in flight.
    """
    started = clock()
    todo = [f for f in sorted(farms) if after is None or f > after]
    swept: list[str] = []
    partition_of: dict[str, str] = {}
    for fazenda in todo:
        for dia, o in lake.farm_objects(fazenda, days[0], days[-1]):
            if (now - o.last_modified).total_seconds() >= min_age_seconds:
                partition_of[o.key] = str(farm_day_key(fazenda, dia))
        swept.append(fazenda)
        if clock() - started >= budget_seconds:
            break
    loaded = wh.loaded_objects(partition_of) if partition_of else set()
    found: dict[str, list[str]] = {}
    for key in sorted(partition_of):
        if key not in loaded:
            found.setdefault(partition_of[key], []).append(key)
    complete = not todo or swept[-1] == todo[-1]
    return SweepPass(found, swept, len(partition_of), None if complete else swept[-1])


@dataclass
class SweepCursor:
    """Where the pass in progress stands, and when it started (a new pass waits the interval)."""

    after: str | None = None
    pass_started: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> "SweepCursor":
        try:
            data = json.loads(text) if text else {}
            return cls(data.get("after"), data.get("pass_started"))
        except (ValueError, AttributeError):
            return cls()

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "pass_started": self.pass_started})


def build_lake_sweep_sensor(job: dg.JobDefinition) -> dg.SensorDefinition:
    """The sweep, bound to the batch job that loads what it finds.

    A pass over every farm is spread over ticks of at most ``FEEDLOT_SWEEP_BUDGET_SECONDS`` of
    listing each (a cursor says where it stands), so it ends within Dagster's deadline at any
    number of farms: listing 1,000 farms × 4 days on a saturated machine in one evaluation went
    past it twice in a row, and the objects it was there to load stayed unloaded. A new pass
    starts ``FEEDLOT_SWEEP_INTERVAL_SECONDS`` after the previous one started; a pass in progress
    goes on at every tick. It does not wait for the streaming batch in flight: at saturation one
    always is, and its run queues behind it on the stream lane (the ledger makes whichever runs
    second skip what the first loaded).
    """
    settings = Settings()

    @dg.sensor(
        name="lake_sweep_sensor",
        job=job,
        minimum_interval_seconds=min(TICK_SECONDS, settings.sweep_interval_seconds),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loads the recent raw objects the load ledger does not have: a notice lost "
        "with a queue or a batch run that gave up never loses a record.",
    )
    def lake_sweep_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, lake: LakeResource
    ) -> dg.SensorResult:
        s = Settings()
        cursor = SweepCursor.parse(context.cursor)
        wall = time.time()
        if cursor.after is None:
            if cursor.pass_started is not None and wall - cursor.pass_started < (
                s.sweep_interval_seconds
            ):
                return dg.SensorResult(
                    cursor=cursor.to_json(),
                    skip_reason="the last pass is complete; the next starts "
                    f"{s.sweep_interval_seconds} s after it began",
                )
            cursor.pass_started = wall
        now = datetime.now(timezone.utc)
        days = [now.date() + timedelta(days=d) for d in range(-s.sweep_lookback_days, 2)]
        farms = context.instance.get_dynamic_partitions(farms_partitions.name)
        started = time.monotonic()
        with warehouse.open() as wh:
            swept = sweep_farms(
                lake,
                wh,
                farms,
                days,
                min_age_seconds=s.sweep_min_age_seconds,
                now=now,
                after=cursor.after,
                budget_seconds=s.sweep_budget_seconds,
            )
        cursor.after = swept.after
        where = (
            f"{len(swept.farms)} of {len(farms)} farm(s)"
            + (f" ({swept.farms[0]} … {swept.farms[-1]})" if swept.farms else "")
            + f" × {len(days)} day(s), {swept.listed} object(s), in "
            f"{time.monotonic() - started:.1f} s; "
            + ("pass complete" if swept.after is None else f"next tick goes on after {swept.after}")
        )
        if not swept.found:
            return dg.SensorResult(cursor=cursor.to_json(), skip_reason=f"all loaded: {where}")
        keys = [k for found in swept.found.values() for k in found]
        context.log.warning(
            f"{len(keys)} raw object(s) in {len(swept.found)} partition(s) were never loaded: "
            f"loading them now ({where}): {keys[:KEYS_LOGGED]}"
        )
        return dg.SensorResult(
            cursor=cursor.to_json(),
            run_requests=[
                dg.RunRequest(
                    # once per pass: a run of the same objects that failed is asked again by the
                    # next pass (the same key would be skipped by Dagster for ever)
                    run_key=f"{batch_run_key(keys)}-pass{cursor.pass_started * 1000:.0f}",
                    run_config=batch_run_config(swept.found),
                    tags={
                        LANE_TAG: STREAM_LANE,
                        "feedlot/trigger": "lake_sweep_sensor",
                        "feedlot/partitions": str(len(swept.found)),
                        "feedlot/objects": str(len(keys)),
                    },
                )
            ],
        )

    return lake_sweep_sensor
