"""The one Definitions object of the platform, assembled from each domain's parts.

Resources are bound to environment variables, not to an environment name: with
``AWS_ENDPOINT_URL`` set they reach the local moto server, without it real AWS; the warehouse is
whatever ``FEEDLOT_WAREHOUSE_URL`` names.
"""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.analytics.definitions import analytics_definitions
from feedlot_pipeline.api_source.assets import api_snapshot
from feedlot_pipeline.api_source.resources import build_public_api_resource
from feedlot_pipeline.api_source.schedules import api_snapshot_job, api_snapshot_schedule
from feedlot_pipeline.backups.assets import ebs_snapshots
from feedlot_pipeline.backups.jobs import ebs_backup_job
from feedlot_pipeline.backups.resources import EbsBackupResource
from feedlot_pipeline.backups.schedules import build_ebs_backup_schedule
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource
from feedlot_pipeline.ingestion.sensors import build_consumption_events_sensor
from feedlot_pipeline.warehouse.assets import historico_consumo
from feedlot_pipeline.warehouse.checks import historico_checks
from feedlot_pipeline.warehouse.jobs import ingest_consumption_job
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.worker.assets import worker_bulk_import
from feedlot_pipeline.worker.jobs import worker_bulk_import_job
from feedlot_pipeline.worker.resources import LargeFileQueueResource, WorkerResource
from feedlot_pipeline.worker.sensors import build_large_file_sensor


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Every resource, from the settings of this environment (moto locally, AWS when deployed).

    The warehouse URL stays a ``dg.EnvVar``: resolved when a run starts, shown by name (never its
    password) in the UI.
    """
    s = Settings()
    return {
        "lake": LakeResource(bucket=s.lake_bucket),
        "sensor_queue": SensorQueueResource(queue=s.sensor_queue, dlq=s.sensor_dlq),
        "large_file_queue": LargeFileQueueResource.from_settings(s),
        "warehouse": WarehouseResource(url=dg.EnvVar(Settings.variable("warehouse_url"))),
        "public_api": build_public_api_resource(),
        "ebs_backup": EbsBackupResource.from_env(),
        "worker": WorkerResource.from_env(),
    }


defs = dg.Definitions(
    assets=[raw_consumption, historico_consumo, api_snapshot, ebs_snapshots, worker_bulk_import],
    asset_checks=historico_checks,
    jobs=[ingest_consumption_job, api_snapshot_job, ebs_backup_job, worker_bulk_import_job],
    sensors=[
        build_consumption_events_sensor(ingest_consumption_job),
        build_large_file_sensor(worker_bulk_import_job),
    ],
    schedules=[api_snapshot_schedule, build_ebs_backup_schedule()],
    resources=build_resources(),
)
# The analytics layer (analytics/definitions.py), merged in: one Definitions at module scope.
defs = dg.Definitions.merge(defs, analytics_definitions())
