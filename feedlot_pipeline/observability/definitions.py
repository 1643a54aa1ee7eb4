"""The observability domain's Dagster definitions (merged by ``feedlot_pipeline.definitions``)."""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.observability.sensors import (
    build_backlog_metrics_sensor,
    build_check_failure_alert_sensor,
    build_farm_freshness_sensor,
    build_run_failure_alert_sensor,
)


def definitions() -> dg.Definitions:
    """Alert sensors (failed runs, failed checks) and metric sensors (backlog, farm freshness)."""
    return dg.Definitions(
        sensors=[
            build_run_failure_alert_sensor(),
            build_check_failure_alert_sensor(),
            build_backlog_metrics_sensor(),
            build_farm_freshness_sensor(),
        ]
    )
