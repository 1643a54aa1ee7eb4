"""The public JSON API source's definitions: snapshots into the raw zone, on a schedule."""

import dagster as dg

from feedlot_pipeline.api_source.assets import api_snapshot
from feedlot_pipeline.api_source.schedules import api_snapshot_job, api_snapshot_schedule


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[api_snapshot], jobs=[api_snapshot_job], schedules=[api_snapshot_schedule]
    )
