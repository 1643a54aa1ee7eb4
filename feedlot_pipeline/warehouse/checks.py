"""Asset checks on historico_consumo, per farm × day partition.

All are blocking: a partition that fails one must not feed summaries. They read the warehouse
(and, for reconciliation, the raw zone) rather than the materialization's own metadata, so they
catch what the load itself would not report.
"""

import dagster as dg

from feedlot_pipeline.ingestion.partitions import farm_day_partitions, split_key
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.warehouse.assets import HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.resources import WarehouseResource


def _stats(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dict:
    fazenda, dia = split_key(context.partition_key)
    with warehouse.open() as wh:
        return wh.partition_stats(fazenda, dia)


@dg.asset_check(
    asset=HISTORICO_CONSUMO,
    blocking=True,
    partitions_def=farm_day_partitions,
    description="id_treated_data is unique in the partition.",
)
def historico_ids_unique(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    stats = _stats(context, warehouse)
    return dg.AssetCheckResult(
        passed=stats["rows"] == stats["distinct_ids"],
        metadata={"rows": stats["rows"], "distinct_ids": stats["distinct_ids"]},
    )


@dg.asset_check(
    asset=HISTORICO_CONSUMO,
    blocking=True,
    partitions_def=farm_day_partitions,
    description="No required column is null.",
)
def historico_required_not_null(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    nulls = {k: v for k, v in _stats(context, warehouse)["nulls"].items() if v}
    return dg.AssetCheckResult(
        passed=not nulls, metadata={"null_counts": dg.MetadataValue.json(nulls)}
    )


@dg.asset_check(
    asset=HISTORICO_CONSUMO,
    blocking=True,
    partitions_def=farm_day_partitions,
    description="consumo_meta equals what the rule recorded on each row computes.",
)
def historico_consumo_meta_consistent(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    stats = _stats(context, warehouse)
    return dg.AssetCheckResult(
        passed=stats["consumo_meta_mismatches"] == 0,
        metadata={"mismatches": stats["consumo_meta_mismatches"], "rows": stats["rows"]},
    )


@dg.asset_check(
    asset=HISTORICO_CONSUMO,
    blocking=True,
    partitions_def=farm_day_partitions,
    description="Records landed in the raw partition = rows loaded + rows rejected.",
)
def historico_reconciles_with_raw(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, lake: LakeResource
) -> dg.AssetCheckResult:
    fazenda, dia = split_key(context.partition_key)
    objects = lake.partition_objects(fazenda, dia)
    landed = sum(sum(1 for _ in lake.iter_lines(o.key)) for o in objects)
    stats = _stats(context, warehouse)
    accounted = stats["rows"] + stats["rejected"]
    return dg.AssetCheckResult(
        passed=landed == accounted,
        metadata={
            "landed": landed,
            "loaded": stats["rows"],
            "rejected": stats["rejected"],
            "difference": landed - accounted,
        },
    )


historico_checks = [
    historico_ids_unique,
    historico_required_not_null,
    historico_consumo_meta_consistent,
    historico_reconciles_with_raw,
]
