# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""The analytics' asset checks.

Per farm × day partition, on the per-asset path (the batch path evaluates the same outcomes in
``partition`` and logs them through ``events``): ``consumo_diario`` reconciles with
historico_consumo (blocking), its anomalies (WARN), and each curated Parquet file holds as many
rows as its table (blocking). Across farms, on the hourly ``analytics_reconciliation_schedule``:
per-farm freshness and the reconciliation of the last days.
"""

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from feedlot_pipeline.analytics import outcomes, per_asset
from feedlot_pipeline.analytics.curated import DIARIO, HISTORICO, CuratedTable
from feedlot_pipeline.analytics.events import metadata_value
from feedlot_pipeline.analytics.reconcile import (
    farm_freshness,
    known_farms,
    recent_days,
    run_reconciliation,
)
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.ingestion.partitions import farm_day_partitions, farms_partitions, split_key
from feedlot_pipeline.warehouse.resources import WarehouseResource


def _outcome_result(outcome: outcomes.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity(outcome.severity),
        metadata={k: metadata_value(k, v) for k, v in outcome.metadata.items()},
        description=outcome.description or None,
    )


@dg.asset_check(
    asset="consumo_diario",
    name=outcomes.CHECK_RECONCILES,
    blocking=True,
    partitions_def=farm_day_partitions,
    description="Rows of consumo_diario = distinct lots × pens of historico_consumo in the "
    "partition, and the kg totals agree.",
)
def consumo_diario_reconciles(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    fazenda, dia = split_key(context.partition_key)
    with warehouse.open() as wh:
        return _outcome_result(
            outcomes.reconcile_outcome(per_asset.partition_counts(wh, fazenda, dia))
        )


@dg.asset_check(
    asset="consumo_diario",
    name=outcomes.CHECK_ANOMALIES,
    blocking=False,
    partitions_def=farm_day_partitions,
    description="WARN: lots whose consumo_real deviates from consumo_meta by more than "
    "FEEDLOT_ANOMALY_THRESHOLD_PCT (25 %).",
)
def consumo_diario_anomalies(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    fazenda, dia = split_key(context.partition_key)
    threshold = AnalyticsSettings().anomaly_threshold_pct
    with warehouse.open() as wh:
        n, listed = per_asset.anomalies_now(wh, fazenda, dia, threshold)
    return _outcome_result(outcomes.anomaly_outcome(n, listed, threshold))


def _row_count_check(table: CuratedTable, asset_name: str, check_name: str):
    @dg.asset_check(
        asset=asset_name,
        name=check_name,
        blocking=True,
        partitions_def=farm_day_partitions,
        description=f"The Parquet file in the bucket holds as many rows as {table.source} in "
        "the partition.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        analytics: AnalyticsResource,
    ) -> dg.AssetCheckResult:
        fazenda, dia = split_key(context.partition_key)
        with warehouse.open() as wh:
            outcome = per_asset.stored_row_count_outcome(
                wh, analytics.targets(), table, fazenda, dia
            )
        return _outcome_result(outcome)

    return _check


curated_historico_row_count = _row_count_check(
    HISTORICO, outcomes.CURATED_HISTORICO, outcomes.CHECK_HISTORICO_ROWS
)
curated_diario_row_count = _row_count_check(
    DIARIO, outcomes.CURATED_DIARIO, outcomes.CHECK_DIARIO_ROWS
)


# --- checks across farms (the hourly job) ---


def _farms(context: dg.AssetCheckExecutionContext, wh: Any) -> list[str]:
    registered = context.instance.get_dynamic_partitions(farms_partitions.name)
    return known_farms(wh, registered)


@dg.asset_check(
    asset="consumo_diario",
    name="farm_freshness",
    description="Per farm: flagged (WARN) when no new data reached consumo_diario for "
    "FEEDLOT_FRESHNESS_HOURS (26 h).",
)
def farm_freshness_check(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    settings = AnalyticsSettings()
    now = datetime.now(timezone.utc)
    with warehouse.open() as wh:
        states = farm_freshness(wh, _farms(context, wh), now, settings.freshness_hours)
    overdue = [s.fazenda for s in states if s.overdue]
    table = [
        {
            "fazenda": s.fazenda,
            "last_update": None if s.last_update is None else s.last_update.isoformat(),
            "age_hours": None if s.age_hours is None else round(s.age_hours, 1),
            "overdue": s.overdue,
        }
        for s in states
    ]
    return dg.AssetCheckResult(
        passed=not overdue,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "overdue_farms": dg.MetadataValue.json(overdue),
            "farms": dg.MetadataValue.json(table),
            "max_age_hours": settings.freshness_hours,
        },
        description=(
            f"{len(overdue)} farm(s) sent nothing for {settings.freshness_hours:g} h: "
            + ", ".join(overdue)
            if overdue
            else "every farm sent data recently"
        ),
    )


@dg.asset_check(
    asset="consumo_diario",
    name="consumo_diario_reconciliation_recent",
    description="Hourly over the last FEEDLOT_RECONCILIATION_DAYS days of every farm: rows of "
    "consumo_diario = distinct lots × pens of historico_consumo. Each mismatch is published as a "
    "failure document (FEEDLOT_FAILURE_TOPIC).",
)
def reconciliation_recent_check(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    settings = AnalyticsSettings()
    today = datetime.now(timezone.utc).date()
    days = recent_days(today, settings.reconciliation_days)
    with warehouse.open() as wh:
        report = run_reconciliation(
            wh, _farms(context, wh), days, run_id=context.op_execution_context.run_id
        )
    for m in report.mismatches:
        context.log.warning(f"reconciliation mismatch: {m.reason}")
    return dg.AssetCheckResult(
        passed=not report.mismatches,
        metadata={
            "partitions_checked": report.partitions_checked,
            "mismatches": len(report.mismatches),
            "details": dg.MetadataValue.json([m.as_dict() for m in report.mismatches][:100]),
            "failure_documents": len([p for p in report.published if p]),
        },
    )


PARTITION_CHECKS = [
    consumo_diario_reconciles,
    consumo_diario_anomalies,
    curated_historico_row_count,
    curated_diario_row_count,
]
CROSS_FARM_CHECKS = [farm_freshness_check, reconciliation_recent_check]
ALL_CHECKS = [*PARTITION_CHECKS, *CROSS_FARM_CHECKS]
