"""The blocking check of historico_consumo, per farm × day partition, read once per load.

One check result per partition and load (a streaming batch logs one for every partition it
loaded, so each costs one event, not four), made of two parts, each with its metadata. Both
compare the load with the warehouse as it is after the load, for the raw objects the load read —
never with what landed after it, so a record landing meanwhile cannot fail them:

- reconciliation: every line read is accounted for (landed = loaded + rejected), the rejections
  table holds exactly the load's rejected lines, and the row of every loaded record is in
  historico_consumo;
- validity: those rows have every required column and the consumo_meta their recorded rule
  computes (the id is the primary key, so it is unique by construction).

The inputs come from two queries per load, whatever the number of partitions: the rejections
filed against the objects read, and the stored rows of the ids loaded. A partition that fails
either check gets no downstream output in that run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from feedlot_pipeline.core.records import RULES
from feedlot_pipeline.ingestion.partitions import farm_day_key, farm_day_partitions
from feedlot_pipeline.warehouse.batches import LedgerEntry
from feedlot_pipeline.warehouse.store import Warehouse

HISTORICO_CONSUMO = dg.AssetKey("historico_consumo")
CHECK_NAME = "loaded_as_landed"
TOLERANCE = 1e-6

CHECK_SPECS = [
    dg.AssetCheckSpec(
        CHECK_NAME,
        asset=HISTORICO_CONSUMO,
        blocking=True,
        partitions_def=farm_day_partitions,
        description=(
            "Reconciliation: every line the load read from the raw zone is accounted for "
            "(landed = loaded + rejected), the rejections table holds exactly the load's "
            "rejected lines, and every loaded record's row is in historico_consumo. Validity: "
            "those rows have every required column and the consumo_meta that the rule "
            "recorded on each row computes."
        ),
    ),
]


@dataclass
class PartitionChecks:
    """The two outcomes of one partition, with what they found."""

    fazenda: str
    dia: date
    reconciles: bool = True
    rows_valid: bool = True
    reconcile_metadata: dict[str, Any] = field(default_factory=dict)
    rows_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.reconciles and self.rows_valid

    @property
    def partition_key(self) -> str:
        return str(farm_day_key(self.fazenda, self.dia))

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "reconciles": self.reconciles,
            "rows_valid": self.rows_valid,
            **self.reconcile_metadata,
            **self.rows_metadata,
        }

    def result(self) -> dg.AssetCheckResult:
        """For an asset step that owns the partition (check_specs on the asset)."""
        return dg.AssetCheckResult(
            check_name=CHECK_NAME, passed=self.passed, metadata=self.metadata
        )

    def evaluation(self) -> dg.AssetCheckEvaluation:
        """For a batch run logging many partitions' outcomes."""
        return dg.AssetCheckEvaluation(
            asset_key=HISTORICO_CONSUMO,
            check_name=CHECK_NAME,
            passed=self.passed,
            metadata=self.metadata,
            blocking=True,
            partition=self.partition_key,
        )


def evaluate(
    warehouse: Warehouse,
    objects: Mapping[str, LedgerEntry],
    ids: Mapping[tuple[str, date], set[str]],
) -> dict[tuple[str, date], PartitionChecks]:
    """Both checks for every partition of a load's ``objects``, from two queries in all."""
    filed = warehouse.rejection_counts(objects)
    all_ids = [i for found in ids.values() for i in found]
    stored = {row[0]: row for row in warehouse.stored_rows(all_ids)}
    out: dict[tuple[str, date], PartitionChecks] = {}
    by_partition: dict[tuple[str, date], list[LedgerEntry]] = {}
    for entry in objects.values():
        by_partition.setdefault((entry.fazenda, entry.dia), []).append(entry)
    for (fazenda, dia), entries in by_partition.items():
        checks = PartitionChecks(fazenda, dia)
        _reconcile(checks, entries, filed, ids.get((fazenda, dia), set()), stored)
        _rows(checks, ids.get((fazenda, dia), set()), stored)
        out[(fazenda, dia)] = checks
    return out


def _reconcile(
    checks: PartitionChecks,
    entries: Iterable[LedgerEntry],
    filed: Mapping[str, int],
    ids: set[str],
    stored: Mapping[str, tuple],
) -> None:
    entries = list(entries)
    landed = sum(e.lines for e in entries)
    loaded = sum(e.loaded for e in entries)
    rejected = sum(e.rejected for e in entries)
    rejections_in_table = sum(filed.get(e.raw_object_key, 0) for e in entries)
    missing_rows = sum(1 for i in ids if i not in stored)
    checks.reconciles = (
        landed == loaded + rejected and rejections_in_table == rejected and missing_rows == 0
    )
    checks.reconcile_metadata = {
        "raw_objects": len(entries),
        "landed": landed,
        "loaded": loaded,
        "rejected": rejected,
        "rejections_in_table": rejections_in_table,
        "records_loaded": len(ids),
        "rows_missing": missing_rows,
        "difference": landed - loaded - rejected,
    }


def _rows(checks: PartitionChecks, ids: set[str], stored: Mapping[str, tuple]) -> None:
    nulls = mismatches = 0
    unknown: set[str] = set()
    for row_id in ids:
        row = stored.get(row_id)
        if row is None:
            continue
        _id, _fazenda, _data, regra, peso_medio, peso_entrada, dia, meta, null_count = row
        if null_count:
            nulls += 1
            continue
        rule = RULES.get(regra)
        if rule is None:
            unknown.add(str(regra))
            mismatches += 1
            continue
        expected = rule.compute(float(peso_medio), float(peso_entrada), int(dia))
        if not math.isclose(expected, float(meta), rel_tol=0.0, abs_tol=TOLERANCE):
            mismatches += 1
    checks.rows_valid = nulls == 0 and mismatches == 0
    checks.rows_metadata = {
        "rows_checked": sum(1 for i in ids if i in stored),
        "rows_with_nulls": nulls,
        "consumo_meta_mismatches": mismatches,
        "unknown_rules": dg.MetadataValue.json(sorted(unknown)),
    }
