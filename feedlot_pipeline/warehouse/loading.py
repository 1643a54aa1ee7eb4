"""Load raw objects into historico_consumo, check them, and describe the result for Dagster.

The one function both ways of running a load call:

- the ``historico_consumo`` asset rebuilds one farm × day partition from all its raw objects
  (a backfill or a click in the UI);
- the streaming batch job loads the objects the sensor was notified of, for many partitions at
  once, skipping those the ledger says are loaded already (a redelivered notice costs a lookup).

Objects are read in parallel, then fed in landing order (landing time, then key), so "latest
landing wins" is decided the same way either way.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import dagster as dg
import sqlalchemy.exc
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError

from feedlot_pipeline.core import metrics
from feedlot_pipeline.core.records import ConsumoMetaRule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import RAW_CONSUMPTION
from feedlot_pipeline.ingestion.partitions import farm_day_key
from feedlot_pipeline.ingestion.resources import LakeResource, RawRead
from feedlot_pipeline.warehouse.batches import LedgerEntry
from feedlot_pipeline.warehouse.checks import HISTORICO_CONSUMO, PartitionChecks, evaluate
from feedlot_pipeline.warehouse.loader import LoadReport, PartitionLoader
from feedlot_pipeline.warehouse.store import Warehouse

KEYS_SHOWN = 20  # object keys listed in a materialization's metadata

# What a restart, a failover or a network blip raises: worth waiting for. Anything else (a bug, a
# schema the code does not know, a failed check) fails the step at once.
TRANSIENT = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    BotoConnectionError,
    HTTPClientError,
)


RETRIES_TAG = "feedlot/load_retries"  # a run tag that overrides FEEDLOT_LOAD_RETRIES for one run

# ... unless the server said who is wrong: a name or a credential waiting cannot fix.
PERMANENT = (
    "does not exist",  # PostgreSQL: database, role
    "password authentication failed",
    "no pg_hba.conf entry",
    "Unknown database",  # MySQL 1049
    "Access denied",  # MySQL 1044/1045
)


def is_transient(exc: BaseException) -> bool:
    """Whether waiting may help: the warehouse or the lake could not be reached or dropped the
    connection, and did not refuse a name or a credential."""
    return isinstance(exc, TRANSIENT) and not any(p in str(exc) for p in PERMANENT)


@contextmanager
def retried_when_transient(context: dg.OpExecutionContext) -> Iterator[None]:
    """Turn a transient failure into a Dagster retry of the step, with exponential backoff.

    ``FEEDLOT_LOAD_RETRIES`` and ``FEEDLOT_LOAD_RETRY_DELAY_SECONDS`` are read when it happens
    (not when the code is loaded); a run tagged ``feedlot/load_retries`` uses its own count. A
    retried load writes nothing twice: it is an upsert, and a streaming batch skips the objects
    its ledger already holds.
    """
    try:
        yield
    except TRANSIENT as exc:
        if not is_transient(exc):
            raise
        s = Settings()
        retries = int(context.run.tags.get(RETRIES_TAG, s.load_retries))
        attempt = context.retry_number
        if attempt >= retries:
            raise
        wait = s.load_retry_delay_seconds * 2**attempt * random.uniform(0.75, 1.25)
        context.log.warning(
            f"transient failure ({type(exc).__name__}); retry {attempt + 1} of "
            f"{retries} in {wait:.0f} s: {str(exc).splitlines()[0][:300]}"
        )
        raise dg.RetryRequested(max_retries=retries, seconds_to_wait=wait) from exc


@dataclass
class PartitionLoad:
    """What one load did to one partition: its ledger sum, the objects read, its checks."""

    fazenda: str
    dia: date
    ledger: LedgerEntry
    reads: list[RawRead]
    checks: PartitionChecks

    @property
    def partition_key(self) -> str:
        return str(farm_day_key(self.fazenda, self.dia))


@dataclass
class LoadOutcome:
    report: LoadReport
    partitions: dict[tuple[str, date], PartitionLoad] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # keys whose object is gone
    skipped: list[str] = field(default_factory=list)  # keys the ledger says are loaded

    @property
    def failed(self) -> list[PartitionLoad]:
        return [p for p in self.partitions.values() if not p.checks.passed]


def load_objects(
    warehouse: Warehouse,
    lake: LakeResource,
    keys: Iterable[str],
    *,
    clients: Mapping[str, str],
    rule: ConsumoMetaRule,
    partition: tuple[str, date] | None = None,
    skip_loaded: bool = False,
    run_id: str | None = None,
    row_ts: datetime | None = None,
) -> LoadOutcome:
    """Read ``keys`` from the lake, load them, write their ledger rows, check every partition.

    With ``partition`` the keys are all of that partition's objects (a rebuild: its rejections
    are replaced as a whole, and it gets check results even with no objects at all).
    """
    keys = sorted(set(keys))
    skipped: list[str] = []
    if skip_loaded and keys:
        done = warehouse.loaded_objects(keys)
        skipped = [k for k in keys if k in done]
        keys = [k for k in keys if k not in done]
    reads = list(lake.read_many(keys))
    missing = [r.key for r in reads if r.lines is None]
    present = sorted((r for r in reads if r.lines is not None), key=lambda r: (r.landed_at, r.key))
    loader = PartitionLoader(
        warehouse,
        clients,
        rule,
        partition,
        row_ts=row_ts or datetime.now(timezone.utc),
        collect_ids=True,
    )
    try:
        for read in present:
            loader.feed(read.key, read.lines or [], read.correlation_id, read.landed_at)
    except BaseException:
        loader.abort()
        raise
    report = loader.finish()
    warehouse.record_loads(list(report.objects.values()), run_id)
    checks = evaluate(warehouse, report.objects, report.ids)
    outcome = LoadOutcome(report, missing=missing, skipped=skipped)
    reads_by_partition: dict[tuple[str, date], list[RawRead]] = {}
    for read in present:
        e = report.objects[read.key]
        reads_by_partition.setdefault((e.fazenda, e.dia), []).append(read)
    for where, ledger in report.partitions().items():
        outcome.partitions[where] = PartitionLoad(
            where[0], where[1], ledger, reads_by_partition.get(where, []), checks[where]
        )
    if partition is not None and partition not in outcome.partitions:
        empty = LedgerEntry("", partition[0], partition[1], None)
        checks_empty = PartitionChecks(*partition)
        checks_empty.reconcile_metadata = {"raw_objects": 0, "landed": 0, "loaded": 0}
        outcome.partitions[partition] = PartitionLoad(
            partition[0], partition[1], empty, [], checks_empty
        )
    return outcome


def materialization_metadata(
    load: PartitionLoad, rule: ConsumoMetaRule, rows: int | None
) -> dict[str, Any]:
    """The historico_consumo materialization of one partition: what the load did to it."""
    e = load.ledger
    metadata: dict[str, Any] = {
        "raw_objects": len(load.reads),
        "landed": e.lines,
        "loaded": e.loaded,
        "inserted": e.inserted,
        "updated": e.updated,
        "unchanged": e.unchanged,
        "superseded": e.superseded,
        "rejected": e.rejected,
        "rejected_by_reason": dg.MetadataValue.json(dict(sorted(e.rejected_by_code.items()))),
        "consumo_meta_rule": rule.name,
        "checks_passed": load.checks.passed,
    }
    if rows is not None:
        metadata["dagster/row_count"] = rows
    correlation = sorted({r.correlation_id for r in load.reads if r.correlation_id})
    if correlation:
        metadata["correlation_ids"] = dg.MetadataValue.json(correlation[:KEYS_SHOWN])
    return metadata


def raw_materialization(load: PartitionLoad) -> dg.AssetMaterialization:
    """raw_consumption of one partition: the objects this load read from it."""
    landed = [r.landed_at for r in load.reads]
    return dg.AssetMaterialization(
        asset_key=RAW_CONSUMPTION,
        partition=load.partition_key,
        description=f"{len(load.reads)} raw object(s) read",
        metadata={
            "raw_objects": len(load.reads),
            "records": load.ledger.lines,
            "object_keys": dg.MetadataValue.json([r.key for r in load.reads][:KEYS_SHOWN]),
            "first_landed_at": min(landed).isoformat() if landed else "",
            "last_landed_at": max(landed).isoformat() if landed else "",
        },
    )


def historico_materialization(
    load: PartitionLoad, rule: ConsumoMetaRule, rows: int | None, run_id: str
) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=HISTORICO_CONSUMO,
        partition=load.partition_key,
        description=f"loaded by batch run {run_id}",
        metadata=materialization_metadata(load, rule, rows),
    )


def emit_load_metrics(
    job: str, seconds: float, outcome: LoadOutcome, *, row_time: datetime | None = None
) -> metrics.FlushResult:
    """The run's CloudWatch metrics (best effort, never raises).

    ``row_time`` (when the rows were committed) gives the event → row latency, one sample per
    object weighted by its rows; leave it out for a rebuild of old partitions, whose landing times
    say nothing about the streaming path's delay.
    """
    report = outcome.report
    latency = None
    if row_time is not None:
        latency = metrics.event_to_row_latency(
            (e.landed_at, row_time, e.loaded)
            for e in report.objects.values()
            if e.landed_at is not None
        )
    by_farm: dict[str, int] = {}
    for e in report.objects.values():
        by_farm[e.fazenda] = by_farm.get(e.fazenda, 0) + e.loaded
    return metrics.record_load(
        job=job,
        seconds=seconds,
        loaded=report.loaded,
        inserted=report.inserted,
        updated=report.updated,
        unchanged=report.unchanged,
        rejected=report.rejected,
        redelivered=report.matched,
        partitions=len(outcome.partitions),
        latency=latency,
        rows_by_farm=by_farm,
    )
