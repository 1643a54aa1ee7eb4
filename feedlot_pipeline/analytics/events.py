"""The analytics' results as Dagster events and metadata, and the guard they answer to.

A batch run refreshes many partitions in one op (``partition.refresh_partitions``) and logs
``partition_events(result)`` for each: the materializations and check evaluations of the
analytics assets under their own keys, as if each asset had run. ``blocked_by_checks`` reads
which of historico_consumo's blocking checks failed on a partition: nothing is built on it.
"""

from typing import Any

import dagster as dg

from feedlot_pipeline.analytics.outcomes import DESCRIBE_CONSUMO, PartitionAnalytics
from feedlot_pipeline.ingestion.partitions import DAY_DIMENSION, FARM_DIMENSION
from feedlot_pipeline.warehouse.checks import CHECK_SPECS, HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.events import log_check_evaluations, log_materializations

HISTORICO_BLOCKING_CHECKS = tuple(spec.name for spec in CHECK_SPECS if spec.blocking)

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


def metadata_value(key: str, value: Any) -> Any:
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
    return {k: metadata_value(k, v) for k, v in metadata.items()}


def partition_events(
    result: PartitionAnalytics,
) -> list[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The Dagster events of one refreshed partition, for ``context.log_event`` in a batch run:
    one materialization per analytics asset, then one evaluation per check."""
    key = str(
        dg.MultiPartitionKey({FARM_DIMENSION: result.fazenda, DAY_DIMENSION: str(result.dia)})
    )
    events: list[dg.AssetMaterialization | dg.AssetCheckEvaluation] = []
    for asset, metadata in result.materializations.items():
        values = materialization_metadata(asset, metadata)
        if asset == DESCRIBE_CONSUMO:
            values["describe"] = describe_table(result.describe)
        events.append(dg.AssetMaterialization(asset_key=asset, partition=key, metadata=values))
    for check in result.checks:
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(check.asset),
                check_name=check.name,
                passed=check.passed,
                severity=dg.AssetCheckSeverity(check.severity),
                metadata={k: metadata_value(k, v) for k, v in check.metadata.items()},
                description=check.description or None,
                partition=key,
            )
        )
    return events


def log_partition_events(context: dg.OpExecutionContext, results: list[PartitionAnalytics]) -> None:
    """Log every partition's events (what a batch run does after ``refresh_partitions``): the
    materializations, then the check evaluations, each as one batch, as the load runs do. One
    ``log_event`` per event took as long as the refresh itself at 1,000 partitions (8,000
    events, 40-48 s)."""
    materializations: list[dg.AssetMaterialization] = []
    evaluations: list[dg.AssetCheckEvaluation] = []
    for result in results:
        for event in partition_events(result):
            if isinstance(event, dg.AssetMaterialization):
                materializations.append(event)
            else:
                evaluations.append(event)
    log_materializations(context, materializations)
    log_check_evaluations(context, evaluations)


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
