"""The observability domain in the code location, loaded the way `feedlot demo`'s daemon loads it
(``-m feedlot_pipeline.definitions``, no attribute: one Definitions object at module scope)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from feedlot_pipeline.definitions import defs
from feedlot_pipeline.observability.definitions import definitions

SENSORS = {
    "run_failure_alert_sensor",
    "check_failure_alert_sensor",
    "backlog_metrics_sensor",
    "farm_freshness_sensor",
}


def test_domain_sensors_are_in_the_code_location_and_start_running() -> None:
    assert {s.name for s in definitions().sensors} == SENSORS
    for name in SENSORS:
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_module_loads_without_naming_the_attribute(tmp_path: Path) -> None:
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "feedlot_pipeline.definitions"],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
