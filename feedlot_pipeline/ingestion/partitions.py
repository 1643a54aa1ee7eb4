"""Partitions of the consumption data: farm (registered as farms appear) × the record's UTC day."""

from __future__ import annotations

from datetime import date

import dagster as dg

from feedlot_pipeline.core.settings import Settings

FARM_DIMENSION = "fazenda"
DAY_DIMENSION = "dia"

farms_partitions = dg.DynamicPartitionsDefinition(name=FARM_DIMENSION)
# end_offset=2: today and tomorrow exist as partitions, so records stamped ahead of UTC still route.
days_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings().partition_start.isoformat(), end_offset=2
)
farm_day_partitions = dg.MultiPartitionsDefinition(
    {FARM_DIMENSION: farms_partitions, DAY_DIMENSION: days_partitions}
)


def farm_day_key(fazenda: str, dia: date | str) -> dg.MultiPartitionKey:
    day = dia.isoformat() if isinstance(dia, date) else dia
    return dg.MultiPartitionKey({FARM_DIMENSION: fazenda, DAY_DIMENSION: day})


def split_key(partition_key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(fazenda, dia) of a farm × day partition key."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        dims = partition_key.keys_by_dimension
    else:
        dims = farm_day_partitions.get_partition_key_from_str(partition_key).keys_by_dimension
    return dims[FARM_DIMENSION], date.fromisoformat(dims[DAY_DIMENSION])
