# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""The analytics assets.

Farm × day assets, downstream of ``historico_consumo``: ``consumo_diario`` (warehouse),
``describe_consumo`` (CSV), ``curated_historico_consumo`` and ``curated_consumo_diario`` (Parquet
+ Glue). In the streaming path they are not separate runs: the batch run that loads the
partitions calls ``partition.refresh_partitions`` and logs ``events.partition_events(result)``
for each partition (materializations and check evaluations under these assets' keys).
Materializing them here, from the UI or a backfill, runs the same work one asset and one
partition at a time (``per_asset``). Their checks are in ``checks``.

Farm × month: ``describe_consumo_mensal`` and ``relatorio_fazenda_mensal``; farm × day:
``relatorio_fazenda``; both on the daily schedule (``schedules.py``).
"""

from datetime import date, timedelta
from typing import Any

import dagster as dg

from feedlot_pipeline.analytics import outcomes, per_asset
from feedlot_pipeline.analytics.curated import DIARIO, HISTORICO, CuratedTable
from feedlot_pipeline.analytics.events import blocked_by_checks, describe_table
from feedlot_pipeline.analytics.report import build_report, publish_report, report_summary
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.analytics.targets import AnalyticsTargets, presigned_url
from feedlot_pipeline.core.settings import AnalyticsSettings, Settings
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    FARM_DIMENSION,
    farm_day_partitions,
    farms_partitions,
    split_key,
)
from feedlot_pipeline.warehouse.checks import HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.schema import consumo_diario as consumo_diario_table

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
        counts, _, anomalies = per_asset.rebuild_summary(wh, fazenda, dia)
    context.log.info(f"{fazenda} {dia}: {counts.lots} lots × pens from {counts.rows} rows")
    return dg.MaterializeResult(metadata=outcomes.summary_metadata(counts, anomalies))


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
        result = per_asset.write_describe(wh, analytics.targets(), fazenda, dia)
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
            result = per_asset.write_curated(wh, targets, table, fazenda, dia)
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


curated_historico_consumo = _curated_asset(HISTORICO, outcomes.CURATED_HISTORICO, HISTORICO_CONSUMO)
curated_consumo_diario = _curated_asset(
    DIARIO, outcomes.CURATED_DIARIO, dg.AssetKey("consumo_diario")
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
        result = per_asset.write_monthly_describe(wh, analytics.targets(), fazenda, month)
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
ALL_ASSETS = [*FARM_DAY_ASSETS, *REPORT_ASSETS, *MONTHLY_ASSETS]
