"""Jobs of the warehouse domain."""

import dagster as dg

from feedlot_pipeline.ingestion.partitions import farm_day_partitions
from feedlot_pipeline.warehouse.assets import historico_consumo

# In-process: a sensor-triggered partition run starts ~10 s sooner than with subprocess steps.
ingest_consumption_job = dg.define_asset_job(
    name="ingest_consumption_job",
    selection=dg.AssetSelection.assets(historico_consumo),
    partitions_def=farm_day_partitions,
    executor_def=dg.in_process_executor,
    description="Load one farm × day partition of the raw zone into historico_consumo, checked.",
)
