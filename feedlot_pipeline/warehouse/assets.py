# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""historico_consumo: one farm × day of raw records, cleaned, enriched and upserted."""

import dagster as dg

from feedlot_pipeline.core.records import get_rule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.partitions import farm_day_partitions, split_key
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.warehouse.loader import PartitionLoader
from feedlot_pipeline.warehouse.resources import WarehouseResource

HISTORICO_CONSUMO = dg.AssetKey("historico_consumo")


@dg.asset(
    key=HISTORICO_CONSUMO,
    deps=[raw_consumption],
    partitions_def=farm_day_partitions,
    group_name="warehouse",
    kinds={"postgres", "s3"},
    description=(
        "Enriched consumption records (consumo_meta, deterministic id_treated_data, row_ts) in the "
        "warehouse table historico_consumo; rejected records with their reasons in "
        "historico_consumo_rejeitados. Rebuilt from the raw partition on every run: idempotent."
    ),
)
def historico_consumo(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    fazenda, dia = split_key(context.partition_key)
    objects = lake.partition_objects(fazenda, dia)
    rule = get_rule(Settings().consumo_meta_rule)
    with warehouse.open() as wh:
        loader = PartitionLoader(wh, clients=wh.clients(), rule=rule, partition=(fazenda, dia))
        for i, obj in enumerate(objects, 1):
            correlation_id, lines = lake.open_lines(obj.key)
            loader.feed(obj.key, lines, correlation_id)
            if i % 50 == 0 or i == len(objects):
                context.log.info(f"read {i}/{len(objects)} raw objects")
        report = loader.finish()
    context.log.info(
        f"{fazenda} {dia}: landed {report.landed}, loaded {report.loaded} "
        f"({report.inserted} new, {report.updated} changed), rejected {report.rejected}"
    )
    return dg.MaterializeResult(
        metadata={
            "raw_objects": len(objects),
            "landed": report.landed,
            "loaded": report.loaded,
            "inserted": report.inserted,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "rejected": report.rejected,
            "rejected_by_reason": dg.MetadataValue.json(dict(report.rejected_by_code)),
            "consumo_meta_rule": rule.name,
            "seconds": round(report.seconds, 3),
        }
    )
