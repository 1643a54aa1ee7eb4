"""The one Definitions object of the platform: each domain's definitions, merged, with the
resources of this environment.

Resources are bound to settings, not to an environment name: with ``AWS_ENDPOINT_URL`` set they
reach the local moto server, without it real AWS; the warehouse is whatever
``FEEDLOT_WAREHOUSE_URL`` names. The code location is ``feedlot_pipeline`` everywhere
(``workspace.yaml``, ``feedlot demo``, ``feedlot replay``).
"""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline import CODE_LOCATION  # noqa: E402,F401 - named here for readers
from feedlot_pipeline.analytics import definitions as analytics
from feedlot_pipeline.api_source import definitions as api_source
from feedlot_pipeline.api_source.resources import build_public_api_resource
from feedlot_pipeline.backups import definitions as backups
from feedlot_pipeline.backups.resources import EbsBackupResource
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource
from feedlot_pipeline.observability import definitions as observability
from feedlot_pipeline.warehouse import definitions as warehouse
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.worker import definitions as worker
from feedlot_pipeline.worker.resources import LargeFileQueueResource, WorkerResource


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


defs = dg.Definitions.merge(
    warehouse.definitions(),
    worker.definitions(),
    api_source.definitions(),
    backups.definitions(),
    observability.definitions(),
    analytics.definitions(),
    dg.Definitions(resources=build_resources()),
)
