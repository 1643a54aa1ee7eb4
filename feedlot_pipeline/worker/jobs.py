"""worker_bulk_import_job: the job the file-drop sensor requests for large landing files.

Run config (what the sensor sends)::

    {"ops": {"worker_bulk_import": {"config": {"input_uri": "s3://…", "output_uri": ""}}}}
"""

import dagster as dg

from feedlot_pipeline.worker.assets import worker_bulk_import

WORKER_BULK_IMPORT_JOB = "worker_bulk_import_job"

# In-process: the step only waits on SSM and S3; a subprocess would add start-up for nothing.
worker_bulk_import_job = dg.define_asset_job(
    name=WORKER_BULK_IMPORT_JOB,
    selection=dg.AssetSelection.assets(worker_bulk_import),
    executor_def=dg.in_process_executor,
    description="Bulk-import one landing file on the EC2 worker (SSM Run Command + Dagster Pipes).",
)


def bulk_import_run_config(input_uri: str, output_uri: str = "") -> dict:
    """The run config of worker_bulk_import_job for one input file."""
    config = {"input_uri": input_uri}
    if output_uri:
        config["output_uri"] = output_uri
    return {"ops": {"worker_bulk_import": {"config": config}}}
