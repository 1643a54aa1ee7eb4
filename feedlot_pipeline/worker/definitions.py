"""The EC2 worker's definitions: bulk imports dispatched over SSM, fed by the large-file queue."""

import dagster as dg

from feedlot_pipeline.worker.assets import worker_bulk_import
from feedlot_pipeline.worker.jobs import worker_bulk_import_job
from feedlot_pipeline.worker.sensors import build_large_file_sensor


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[worker_bulk_import],
        jobs=[worker_bulk_import_job],
        sensors=[build_large_file_sensor(worker_bulk_import_job)],
    )
