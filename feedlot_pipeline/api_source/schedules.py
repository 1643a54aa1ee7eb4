"""The job and schedule of the public-API snapshot.

Daily by default (``0 6 * * *`` UTC, 03:00 in Brazil, off the farms' working hours): every run
lands a full snapshot (the API offers no incremental cursor), so hourly would multiply storage and
the load on a rate-limited public API 24 times for reference data that, like the seed's catalogue
of public APIs, changes slowly. ``FEEDLOT_API_CRON`` changes it (read when the code loads).

The schedule starts running only where ``FEEDLOT_API_URL`` is set at load time; elsewhere it is
stopped, so an unconfigured deployment does not fail a run every day (it can still be turned on
in the UI).
"""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.api_source.assets import api_snapshot
from feedlot_pipeline.core.settings import PublicApiSettings

api_snapshot_job = dg.define_asset_job(
    name="api_snapshot_job",
    selection=dg.AssetSelection.assets(api_snapshot),
    executor_def=dg.in_process_executor,
    description="Pull the configured public JSON API into api_snapshots/ in the lake's raw zone.",
)


def build_api_snapshot_schedule(
    job: dg.UnresolvedAssetJobDefinition = api_snapshot_job, cron: str | None = None
) -> dg.ScheduleDefinition:
    """The schedule on ``cron`` (default: FEEDLOT_API_CRON, else daily at 06:00 UTC)."""
    settings = PublicApiSettings()
    configured = settings.api_url is not None
    return dg.ScheduleDefinition(
        name="api_snapshot_schedule",
        job=job,
        cron_schedule=cron or settings.api_cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if configured else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Full snapshot of the public JSON API into the raw zone.",
    )


api_snapshot_schedule = build_api_snapshot_schedule()
