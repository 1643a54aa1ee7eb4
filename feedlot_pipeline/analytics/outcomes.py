"""What the analytics of a farm × day partition report, as plain data: asset and check names,
materialization metadata and check outcomes.

Both paths build them here: the batch path (``partition.refresh_partitions``, many partitions in
one run) and the per-asset path (``per_asset``, the Dagster UI: one asset, one partition), so a
check reads the same whichever path evaluated it. ``events`` and ``checks`` make Dagster events
of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from feedlot_pipeline.analytics.curated import DIARIO, HISTORICO, CuratedTable
from feedlot_pipeline.analytics.summary import PartitionCounts

# Asset and check names (the Dagster definitions in assets.py and checks.py use the same ones).
CONSUMO_DIARIO = "consumo_diario"
DESCRIBE_CONSUMO = "describe_consumo"
CURATED_HISTORICO = "curated_historico_consumo"
CURATED_DIARIO = "curated_consumo_diario"
CHECK_RECONCILES = "consumo_diario_reconciles"
CHECK_ANOMALIES = "consumo_diario_anomalies"
CHECK_HISTORICO_ROWS = "curated_historico_row_count"
CHECK_DIARIO_ROWS = "curated_diario_row_count"
CURATED_ASSETS = {HISTORICO.name: CURATED_HISTORICO, DIARIO.name: CURATED_DIARIO}
ROW_CHECKS = {HISTORICO.name: CHECK_HISTORICO_ROWS, DIARIO.name: CHECK_DIARIO_ROWS}
ANOMALIES_LISTED = 50  # lots named in the anomalies check's metadata


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check evaluation, as plain data."""

    asset: str
    name: str
    passed: bool
    severity: str  # "ERROR" or "WARN"
    metadata: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class PartitionAnalytics:
    """What the analytics did for one farm × day partition."""

    fazenda: str
    dia: date
    counts: PartitionCounts
    outputs: dict[str, str]  # asset name -> s3:// URI
    materializations: dict[str, dict[str, Any]]  # asset name -> metadata (plain values)
    checks: tuple[CheckOutcome, ...]
    describe: list[dict[str, Any]] = field(default_factory=list)
    notice_id: str | None = None

    @property
    def passed(self) -> bool:
        """Every ERROR-severity check passed (WARNs, like anomalies, do not count)."""
        return all(c.passed for c in self.checks if c.severity == "ERROR")


def summary_metadata(c: PartitionCounts, anomalies: int) -> dict[str, Any]:
    return {
        "dagster/row_count": c.lots,
        "historico_rows": c.rows,
        "rejected": c.rejected,
        "total_kg": round(c.total_kg, 3),
        "anomalies": anomalies,
    }


def reconcile_outcome(c: PartitionCounts) -> CheckOutcome:
    return CheckOutcome(
        asset=CONSUMO_DIARIO,
        name=CHECK_RECONCILES,
        passed=c.reconciles,
        severity="ERROR",
        metadata={
            "lots": c.lots,
            "lots_expected": c.lots_expected,
            "total_kg": round(c.total_kg, 6),
            "total_kg_historico": round(c.total_kg_historico, 6),
            "difference_kg": round(c.total_kg - c.total_kg_historico, 6),
        },
        description="rows = distinct lots x pens of historico_consumo; kg totals equal",
    )


def anomaly_outcome(count: int, listed: list[dict[str, Any]], threshold: float) -> CheckOutcome:
    lots = [
        {
            "id_lote": r["id_lote"],
            "id_curral": r["id_curral"],
            "desvio_pct": round(float(r["desvio_pct"]), 2),
            "consumo_real_cabeca": round(float(r["consumo_real_cabeca"]), 3),
            "consumo_meta_cabeca": round(float(r["consumo_meta_cabeca"]), 3),
        }
        for r in listed
    ]
    return CheckOutcome(
        asset=CONSUMO_DIARIO,
        name=CHECK_ANOMALIES,
        passed=count == 0,
        severity="WARN",
        metadata={"anomalies": count, "threshold_pct": threshold, "lots": lots},
        description=f"lots whose consumo_real deviates from consumo_meta by more than "
        f"{threshold:g} %",
    )


def row_count_outcome(table: CuratedTable, parquet: int, warehouse: int) -> CheckOutcome:
    return CheckOutcome(
        asset=CURATED_ASSETS[table.name],
        name=ROW_CHECKS[table.name],
        passed=parquet == warehouse,
        severity="ERROR",
        metadata={"parquet_rows": parquet, "warehouse_rows": warehouse},
        description=f"the Parquet partition holds as many rows as {table.source}",
    )
