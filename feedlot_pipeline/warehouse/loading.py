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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import dagster as dg

from feedlot_pipeline.core.records import ConsumoMetaRule
from feedlot_pipeline.ingestion.assets import RAW_CONSUMPTION
from feedlot_pipeline.ingestion.partitions import farm_day_key
from feedlot_pipeline.ingestion.resources import LakeResource, RawRead
from feedlot_pipeline.warehouse.batches import LedgerEntry
from feedlot_pipeline.warehouse.checks import HISTORICO_CONSUMO, PartitionChecks, evaluate
from feedlot_pipeline.warehouse.loader import LoadReport, PartitionLoader
from feedlot_pipeline.warehouse.store import Warehouse

KEYS_SHOWN = 20  # object keys listed in a materialization's metadata


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
