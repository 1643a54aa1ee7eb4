# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""The analytics assets and checks, and the helper that turns a batch run's results into events.

Farm × day assets, downstream of ``historico_consumo``: ``consumo_diario`` (warehouse),
``describe_consumo`` (CSV), ``curated_historico_consumo`` and ``curated_consumo_diario`` (Parquet
+ Glue). In the streaming path they are not separate runs: the batch run that loads the
partitions calls ``partition.refresh_partitions`` and logs ``partition_events(result)`` for each
partition (materializations and check evaluations under these assets' keys). Materializing them
here, from the UI or a backfill, runs the same code one asset and one partition at a time.

Farm × month: ``describe_consumo_mensal`` and ``relatorio_fazenda_mensal``; farm × day:
``relatorio_fazenda``; both on the daily schedule (``schedules.py``).
"""

from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg

from feedlot_pipeline.analytics import partition as part
from feedlot_pipeline.analytics.curated import DIARIO, HISTORICO, CuratedTable
from feedlot_pipeline.analytics.reconcile import (
    farm_freshness,
    known_farms,
    recent_days,
    run_reconciliation,
)
from feedlot_pipeline.analytics.report import build_report, publish_report, report_summary
from feedlot_pipeline.analytics.targets import AnalyticsTargets, presigned_url
from feedlot_pipeline.core.settings import AnalyticsSettings, Settings
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    FARM_DIMENSION,
    farm_day_partitions,
    farms_partitions,
    split_key,
)
from feedlot_pipeline.warehouse.checks import CHECK_SPECS, HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.schema import consumo_diario as consumo_diario_table

HISTORICO_BLOCKING_CHECKS = tuple(spec.name for spec in CHECK_SPECS if spec.blocking)
MONTH_DIMENSION = "mes"
GROUP = "analytics"
OWNERS = ["team:analytics"]

farm_month_partitions = dg.MultiPartitionsDefinition(
    {
        FARM_DIMENSION: farms_partitions,
        MONTH_DIMENSION: dg.MonthlyPartitionsDefinition(
            start_date=Settings().partition_start.replace(day=1).isoformat(), end_offset=1
        ),
    }
)
# farm × day upstream -> farm × month downstream: the same farm, every day of the month.
DAYS_OF_MONTH = dg.MultiPartitionMapping(
    {
        FARM_DIMENSION: dg.DimensionPartitionMapping(FARM_DIMENSION, dg.IdentityPartitionMapping()),
        DAY_DIMENSION: dg.DimensionPartitionMapping(
            MONTH_DIMENSION, dg.TimeWindowPartitionMapping()
        ),
    }
)


class AnalyticsResource(dg.ConfigurableResource):
    """Where the analytics write: processed bucket (prefixes), Glue database, events topic."""

    bucket: str
    glue_database: str
    events_topic: str
    curated_prefix: str = "curated/"
    describe_prefix: str = "describe/"
    reports_prefix: str = "reports/"

    @classmethod
    def from_settings(cls) -> "AnalyticsResource":
        t = AnalyticsTargets.from_settings()
        return cls(
            bucket=t.bucket,
            glue_database=t.glue_database,
            events_topic=t.events_topic,
            curated_prefix=t.curated_prefix,
            describe_prefix=t.describe_prefix,
            reports_prefix=t.reports_prefix,
        )

    def targets(self) -> AnalyticsTargets:
        return AnalyticsTargets(
            bucket=self.bucket,
            glue_database=self.glue_database,
            events_topic=self.events_topic,
            curated_prefix=self.curated_prefix,
            describe_prefix=self.describe_prefix,
            reports_prefix=self.reports_prefix,
        )


# --- metadata ---


def _column_schema() -> dg.TableSchema:
    descriptions = {
        "fazenda": "farm",
        "dia": "UTC day of the records",
        "id_lote": "lot (digit string)",
        "id_curral": "pen (digit string)",
        **DIARIO.comments,
    }
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                str(c.type).lower(),
                description=descriptions.get(c.name, ""),
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in consumo_diario_table.columns
        ]
    )


def _parquet_schema(table: CuratedTable) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(n, table.glue_types[n], description=table.comments[n])
            for n in table.schema.names
        ]
        + [
            dg.TableColumn("fazenda", "string (partition)"),
            dg.TableColumn("dia", "date (partition)"),
        ]
    )


_DESCRIBE_SCHEMA = dg.TableSchema(
    columns=[dg.TableColumn("estatistica", "string")]
    + [
        dg.TableColumn(c, "float")
        for c in (
            "peso_entrada",
            "peso_medio",
            "quantidade_animais",
            "dia_confinamento",
            "consumo_real",
            "consumo_meta",
            "desvio_pct",
        )
    ]
)


def _value(key: str, value: Any) -> Any:
    """A metadata value of the plain data in ``PartitionAnalytics``."""
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, str) and value.startswith("s3://"):
        return dg.MetadataValue.path(value)
    if key == "lots" and isinstance(value, list):
        return dg.MetadataValue.json(value)
    return value


def describe_table(records: list[dict[str, Any]]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in records], schema=_DESCRIBE_SCHEMA
    )


def materialization_metadata(asset: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(k, v) for k, v in metadata.items()}


def partition_events(
    result: part.PartitionAnalytics,
) -> list[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The Dagster events of one refreshed partition, for ``context.log_event`` in a batch run:
    one materialization per analytics asset, then one evaluation per check."""
    key = str(
        dg.MultiPartitionKey({FARM_DIMENSION: result.fazenda, DAY_DIMENSION: str(result.dia)})
    )
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    for asset, metadata in result.materializations.items():
        values = materialization_metadata(asset, metadata)
        if asset == part.DESCRIBE_CONSUMO:
            values["describe"] = describe_table(result.describe)
        events.append(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=values))
    for check in result.checks:
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(check.asset),
                check_name=check.name,
                passed=check.passed,
                severity=dg.AssetCheckSeverity(check.severity),
                metadata={k: _value(k, v) for k, v in check.metadata.items()},
                description=check.description or None,
                partition=key,
            )
        )
    return events


def log_partition_events(
    context: dg.OpExecutionContext, results: list[part.PartitionAnalytics]
) -> None:
    """Log every partition's events (what a batch run does after ``refresh_partitions``)."""
    for result in results:
        for event in partition_events(result):
            context.log_event(event)


def blocked_by_checks(instance: dg.DagsterInstance, partition_key: str) -> list[str]:
    """historico_consumo's blocking checks whose latest evaluation on the partition failed."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    keys = [dg.AssetCheckKey(HISTORICO_CONSUMO, name) for name in HISTORICO_BLOCKING_CHECKS]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition_key)
    )
    return sorted(
        key.name
        for key, record in latest.items()
        if record.status == AssetCheckExecutionRecordStatus.FAILED
    )


def _guard(context: dg.AssetExecutionContext) -> None:
    failed = blocked_by_checks(context.instance, context.partition_key)
    if failed:
        raise dg.Failure(
            description=(
                f"historico_consumo {context.partition_key} failed its blocking check(s) "
                f"{', '.join(failed)}: no summary is built on it. Fix and reload the partition."
            ),
            metadata={"failed_checks": dg.MetadataValue.json(failed)},
        )


# --- farm × day assets ---


@dg.asset(
    key="consumo_diario",
    deps=[HISTORICO_CONSUMO],
    partitions_def=farm_day_partitions,
    group_name=GROUP,
    kinds={"postgres", "table"},
    owners=OWNERS,
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=AnalyticsSettings().freshness_hours)
    ),
    description=(
        "Daily summary in the warehouse table `consumo_diario`: one row per farm × day × lot × "
        "pen with animals, consumo real and meta per head, `desvio_pct` = (real − meta) / meta × "
        "100, kg fed (consumo_real × quantidade_animais), peso_medio, dia_confinamento and the "
        "rule. Rebuilt per partition in one transaction (a rerun writes the same rows). In the "
        "streaming path the batch run that loads `historico_consumo` builds it in the same run."
    ),
    metadata={
        "dagster/table_name": "consumo_diario",
        "dagster/column_schema": _column_schema(),
    },
)
def consumo_diario(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    _guard(context)
    fazenda, dia = split_key(context.partition_key)
    with warehouse.open() as wh:
        counts, _, anomalies = part.rebuild_summary(wh, fazenda, dia)
    context.log.info(f"{fazenda} {dia}: {counts.lots} lots × pens from {counts.rows} rows")
    return dg.MaterializeResult(metadata=part.summary_metadata(counts, anomalies))


@dg.asset(
    key="describe_consumo",
    deps=[HISTORICO_CONSUMO],
    partitions_def=farm_day_partitions,
    group_name=GROUP,
    kinds={"s3", "csv", "pandas"},
    owners=OWNERS,
    description=(
        "`pandas.DataFrame.describe()` (count, mean, std, min, quartiles, max) of the "
        "partition's numeric columns of historico_consumo plus `desvio_pct` per row, as CSV in "
        "the processed bucket: `describe/historico_consumo/<fazenda>/<yyyy>/<mm>/<dd>/describe.csv`"
        ". rows, mean consumo_real and mean desvio_pct are plotted across partitions."
    ),
)
def describe_consumo(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analytics: AnalyticsResource
) -> dg.MaterializeResult:
    _guard(context)
    fazenda, dia = split_key(context.partition_key)
    with warehouse.open() as wh:
        result = part.write_describe(wh, analytics.targets(), fazenda, dia)
    return dg.MaterializeResult(
        metadata={
            **result.headline,
            "csv": dg.MetadataValue.path(result.uri),
            "describe": describe_table(result.records),
        }
    )


def _curated_asset(table: CuratedTable, asset_name: str, upstream: dg.AssetKey):
    @dg.asset(
        key=asset_name,
        deps=[upstream],
        partitions_def=farm_day_partitions,
        group_name=GROUP,
        kinds={"s3", "parquet", "glue"},
        owners=OWNERS,
        description=(
            f"`{table.source}` of the partition as Parquet in the curated zone: "
            f"`curated/{table.name}/fazenda=<fazenda>/dia=<yyyy-mm-dd>/part-0.parquet` "
            f"(processed bucket), registered as a partition of the Glue table "
            f"`<FEEDLOT_GLUE_DATABASE>.{table.name}` so Athena reads it without a crawler."
        ),
        metadata={"dagster/column_schema": _parquet_schema(table)},
    )
    def _asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        analytics: AnalyticsResource,
    ) -> dg.MaterializeResult:
        _guard(context)
        fazenda, dia = split_key(context.partition_key)
        targets = analytics.targets()
        with warehouse.open() as wh:
            result = part.write_curated(wh, targets, table, fazenda, dia)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows,
                "parquet": dg.MetadataValue.path(result.uri),
                "bytes": result.bytes,
                "glue_table": f"{targets.glue_database}.{table.name}",
                "glue_partition": f"fazenda={fazenda}/dia={dia.isoformat()}",
            }
        )

    return _asset


curated_historico_consumo = _curated_asset(HISTORICO, part.CURATED_HISTORICO, HISTORICO_CONSUMO)
curated_consumo_diario = _curated_asset(DIARIO, part.CURATED_DIARIO, dg.AssetKey("consumo_diario"))


# --- checks on the farm × day assets ---


def _outcome_result(outcome: part.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity(outcome.severity),
        metadata={k: _value(k, v) for k, v in outcome.metadata.items()},
        description=outcome.description or None,
    )


@dg.asset_check(
    asset="consumo_diario",
    name=part.CHECK_RECONCILES,
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
        return _outcome_result(part.reconcile_outcome(part.partition_counts(wh, fazenda, dia)))


@dg.asset_check(
    asset="consumo_diario",
    name=part.CHECK_ANOMALIES,
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
        n, listed = part.anomalies_now(wh, fazenda, dia, threshold)
    return _outcome_result(part.anomaly_outcome(n, listed, threshold))


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
            outcome = part.stored_row_count_outcome(wh, analytics.targets(), table, fazenda, dia)
        return _outcome_result(outcome)

    return _check


curated_historico_row_count = _row_count_check(
    HISTORICO, part.CURATED_HISTORICO, part.CHECK_HISTORICO_ROWS
)
curated_diario_row_count = _row_count_check(DIARIO, part.CURATED_DIARIO, part.CHECK_DIARIO_ROWS)


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


# --- farm × month: monthly describe; reports ---


def _month_key(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    if not isinstance(partition_key, dg.MultiPartitionKey):
        partition_key = farm_month_partitions.get_partition_key_from_str(partition_key)
    dims = partition_key.keys_by_dimension
    return dims[FARM_DIMENSION], date.fromisoformat(dims[MONTH_DIMENSION])


@dg.asset(
    key="describe_consumo_mensal",
    deps=[dg.AssetDep(HISTORICO_CONSUMO, partition_mapping=DAYS_OF_MONTH)],
    partitions_def=farm_month_partitions,
    group_name=GROUP,
    kinds={"s3", "csv", "pandas"},
    owners=OWNERS,
    description=(
        "`describe()` of a farm's month of historico_consumo, as CSV: "
        "`describe/historico_consumo/<fazenda>/<yyyy>/<mm>/describe.csv`. Built daily by "
        "`analytics_monthly_schedule` (month to date)."
    ),
)
def describe_consumo_mensal(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analytics: AnalyticsResource
) -> dg.MaterializeResult:
    fazenda, month = _month_key(context.partition_key)
    with warehouse.open() as wh:
        result = part.write_monthly_describe(wh, analytics.targets(), fazenda, month)
    return dg.MaterializeResult(
        metadata={
            **result.headline,
            "csv": dg.MetadataValue.path(result.uri),
            "describe": describe_table(result.records),
        }
    )


def _report_metadata(targets: AnalyticsTargets, uri: str, key: str, data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        **{k: v for k, v in report_summary(data).items() if v is not None},
        "report": dg.MetadataValue.path(uri),
    }
    url = presigned_url(targets, key)
    if url:
        out["open_report"] = dg.MetadataValue.url(url)
    return out


@dg.asset(
    key="relatorio_fazenda",
    deps=[dg.AssetKey("consumo_diario")],
    partitions_def=farm_day_partitions,
    group_name=GROUP,
    kinds={"s3", "html"},
    owners=OWNERS,
    description=(
        "The farm report of a day: an HTML page with the day's numbers, consumo real vs meta "
        "per lot and the trend of the last 30 days (inline SVG), in the processed bucket: "
        "`reports/<fazenda>/<yyyy>/<mm>/<dd>/relatorio.html` (link in the metadata). Built daily "
        "for yesterday by `farm_report_schedule`; `feedlot report --farm F --day D` writes it "
        "locally."
    ),
)
def relatorio_fazenda(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analytics: AnalyticsResource
) -> dg.MaterializeResult:
    fazenda, dia = split_key(context.partition_key)
    targets = analytics.targets()
    with warehouse.open() as wh:
        data = build_report(wh, fazenda, dia)
    uri, key = publish_report(targets, data, dia)
    return dg.MaterializeResult(metadata=_report_metadata(targets, uri, key, data))


@dg.asset(
    key="relatorio_fazenda_mensal",
    deps=[dg.AssetDep("consumo_diario", partition_mapping=DAYS_OF_MONTH)],
    partitions_def=farm_month_partitions,
    group_name=GROUP,
    kinds={"s3", "html"},
    owners=OWNERS,
    description=(
        "The farm report of a month: `reports/<fazenda>/<yyyy>/<mm>/relatorio.html` (per lot × "
        "pen over the month, the month's daily trend). Built daily by "
        "`analytics_monthly_schedule` (month to date)."
    ),
)
def relatorio_fazenda_mensal(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analytics: AnalyticsResource
) -> dg.MaterializeResult:
    fazenda, month = _month_key(context.partition_key)
    targets = analytics.targets()
    with warehouse.open() as wh:
        data = build_report(wh, fazenda, month, monthly=True)
    uri, key = publish_report(targets, data, month)
    return dg.MaterializeResult(metadata=_report_metadata(targets, uri, key, data))


FARM_DAY_ASSETS = [
    consumo_diario,
    describe_consumo,
    curated_historico_consumo,
    curated_consumo_diario,
]
REPORT_ASSETS = [relatorio_fazenda]
MONTHLY_ASSETS = [describe_consumo_mensal, relatorio_fazenda_mensal]
PARTITION_CHECKS = [
    consumo_diario_reconciles,
    consumo_diario_anomalies,
    curated_historico_row_count,
    curated_diario_row_count,
]
CROSS_FARM_CHECKS = [farm_freshness_check, reconciliation_recent_check]
ALL_ASSETS = [*FARM_DAY_ASSETS, *REPORT_ASSETS, *MONTHLY_ASSETS]
ALL_CHECKS = [*PARTITION_CHECKS, *CROSS_FARM_CHECKS]
