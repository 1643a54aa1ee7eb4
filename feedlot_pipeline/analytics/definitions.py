"""The analytics layer's Definitions, merged into the code location by ``feedlot_pipeline.
definitions`` (``dg.Definitions.merge``). The ``warehouse`` resource is the platform's."""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.analytics.assets import ALL_ASSETS
from feedlot_pipeline.analytics.checks import ALL_CHECKS
from feedlot_pipeline.analytics.refresh import analytics_refresh_job, build_analytics_refresh_sensor
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.analytics.schedules import (
    analytics_monthly_job,
    analytics_reconciliation_job,
    build_schedules,
    farm_report_job,
)


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[
            analytics_refresh_job,
            analytics_monthly_job,
            farm_report_job,
            analytics_reconciliation_job,
        ],
        schedules=build_schedules(),
        sensors=[build_analytics_refresh_sensor()],
        resources={"analytics": AnalyticsResource.from_settings()},
    )
