"""The code location loads and validates the way `dagster dev` and the daemon load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from feedlot_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    """Validation needs no instance storage: run it with an empty DAGSTER_HOME."""
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_every_warehouse_asset_has_blocking_checks() -> None:
    graph = defs.resolve_asset_graph()
    historico = [
        key for key in graph.asset_check_keys if key.asset_key.path == ["historico_consumo"]
    ]
    assert {key.name for key in historico} == {"loaded_as_landed"}
    assert all(graph.get_check_spec(key).blocking for key in historico)
    sensor = defs.resolve_sensor_def("consumption_events_sensor")
    assert sensor.job_name == "ingest_batch_job"  # one run per tick, not per partition
