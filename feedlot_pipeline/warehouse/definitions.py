"""The consumption data flow's definitions: raw zone → historico_consumo, streaming and rebuilds."""

import dagster as dg

from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.sensors import build_consumption_events_sensor
from feedlot_pipeline.warehouse.assets import historico_consumo
from feedlot_pipeline.warehouse.jobs import ingest_batch_job, ingest_consumption_job
from feedlot_pipeline.warehouse.sensors import build_lake_sweep_sensor, client_map_sensor


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_consumption, historico_consumo],
        jobs=[ingest_batch_job, ingest_consumption_job],
        sensors=[
            build_consumption_events_sensor(ingest_batch_job),
            build_lake_sweep_sensor(ingest_batch_job),
            client_map_sensor,
        ],
    )
