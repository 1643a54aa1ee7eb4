# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""historico_consumo: one farm × day of raw records, cleaned, enriched and merged, checked.

Materializing a partition here (a backfill, the UI, ``feedlot replay``) rebuilds it from every raw
object it has. The streaming path materializes the same partitions from its batch runs
(``warehouse.jobs``), with the same loader and the same checks.
"""

import dagster as dg

from feedlot_pipeline.core.records import get_rule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.partitions import farm_day_partitions, split_key
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.warehouse.checks import CHECK_SPECS, HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.loading import load_objects, materialization_metadata
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.schema import historico_consumo as table

OWNERS = ["team:data-engineering"]


def column_schema(sa_table) -> dg.TableSchema:  # noqa: ANN001 - a sqlalchemy Table
    """The Dagster catalog's view of a warehouse table, from its SQLAlchemy definition."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=str(c.type.compile(dialect=_pg_dialect())),
                constraints=dg.TableColumnConstraints(nullable=bool(c.nullable)),
                description="primary key" if c.primary_key else None,
            )
            for c in sa_table.columns
        ]
    )


def _pg_dialect():  # noqa: ANN202
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


@dg.asset(
    key=HISTORICO_CONSUMO,
    deps=[raw_consumption],
    partitions_def=farm_day_partitions,
    check_specs=CHECK_SPECS,
    retry_policy=dg.RetryPolicy(
        max_retries=5, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    group_name="warehouse",
    kinds={"postgres", "s3"},
    owners=OWNERS,
    description=(
        "Enriched consumption records (consumo_meta, deterministic id_treated_data, row_ts) in "
        "the warehouse table `historico_consumo`. A changed record replaces the stored one when "
        "it landed later; the version that lost is kept in `historico_consumo_versoes`. Rejected "
        "records, with their reasons, are in `historico_consumo_rejeitados`; what became of "
        "every raw object is in `historico_consumo_cargas`."
    ),
    metadata={
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": "warehouse.historico_consumo",
    },
)
def historico_consumo(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
):
    fazenda, dia = split_key(context.partition_key)
    objects = lake.partition_objects(fazenda, dia)
    rule = get_rule(Settings().consumo_meta_rule)
    context.log.info(f"{fazenda} {dia}: rebuilding from {len(objects)} raw object(s)")
    with warehouse.open() as wh:
        outcome = load_objects(
            wh,
            lake,
            [o.key for o in objects],
            clients=wh.clients(),
            rule=rule,
            partition=(fazenda, dia),
            run_id=context.run_id,
        )
        rows = wh.partition_row_counts([(fazenda, dia)])[(fazenda, dia)]
    load = outcome.partitions[(fazenda, dia)]
    e = load.ledger
    context.log.info(
        f"{fazenda} {dia}: landed {e.lines}, loaded {e.loaded} ({e.inserted} new, {e.updated} "
        f"replaced, {e.unchanged} unchanged, {e.superseded} superseded), rejected {e.rejected}"
        + (f"; {len(outcome.missing)} object(s) vanished while reading" if outcome.missing else "")
    )
    metadata = materialization_metadata(load, rule, rows)
    metadata["seconds"] = round(outcome.report.seconds, 3)
    yield dg.MaterializeResult(metadata=metadata)
    yield from load.checks.results()
