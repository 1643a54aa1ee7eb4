"""The code location loads and validates the way `dagster dev` and the daemon load it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def fresh_load() -> subprocess.CompletedProcess:
    """The code location imported by a fresh process, as a run loads it, with every
    DeprecationWarning shown (one import, ~2.5 s, for the two tests below)."""
    return subprocess.run(
        [
            sys.executable,
            "-W",
            "always::DeprecationWarning",
            "-c",
            "import feedlot_pipeline.definitions",
        ],
        env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_loading_the_code_location_warns_of_nothing_we_chose_knowingly(fresh_load) -> None:
    """A run loads the code as a fresh process does: no Beta/Preview warnings for the Dagster
    features used on purpose (they filled `make dev`'s log, eight lines per run)."""
    proc = fresh_load
    assert proc.returncode == 0, proc.stderr
    assert "BetaWarning" not in proc.stderr and "PreviewWarning" not in proc.stderr, proc.stderr


def test_the_code_uses_no_api_dagster_deprecates(fresh_load) -> None:
    """With every warning shown, loading the code location names no deprecated Dagster API of
    ours (define_asset_job's partitions_def was one: inferred from the assets since 1.x)."""
    proc = fresh_load
    assert proc.returncode == 0, proc.stderr
    ours = [
        line
        for line in proc.stderr.splitlines()
        if "feedlot_pipeline" in line and "Deprecat" in line
    ]
    assert ours == [], proc.stderr


def test_every_warehouse_asset_has_blocking_checks() -> None:
    graph = defs.resolve_asset_graph()
    historico = [
        key for key in graph.asset_check_keys if key.asset_key.path == ["historico_consumo"]
    ]
    assert {key.name for key in historico} == {"loaded_as_landed"}
    assert all(graph.get_check_spec(key).blocking for key in historico)
    sensor = defs.resolve_sensor_def("consumption_events_sensor")
    assert sensor.job_name == "ingest_batch_job"  # one run per tick, not per partition


# `<fazenda>` outside a code span is an HTML tag to the UI's Markdown: it vanishes.
BARE_PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>\s]*>")


def test_descriptions_keep_their_placeholders_in_the_ui() -> None:
    """Paths like historico_diario/<fazenda>/<yyyy>/… are in code spans (or the UI drops them)."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    texts = {
        f"asset {k.to_user_string()}": graph.get(k).description for k in graph.get_all_asset_keys()
    }
    texts |= {f"check {k}": graph.get_check_spec(k).description for k in graph.asset_check_keys}
    texts |= {f"job {j.name}": j.description for j in repo.get_all_jobs()}
    texts |= {f"sensor {s.name}": s.description for s in repo.sensor_defs}
    texts |= {f"schedule {s.name}": s.description for s in repo.schedule_defs}
    assert texts["asset raw_consumption"]  # the one the issue saw eaten
    bare = {
        what: BARE_PLACEHOLDER.findall(re.sub(r"`[^`]*`", "", text))
        for what, text in texts.items()
        if text
    }
    assert {what: found for what, found in bare.items() if found} == {}


def test_historico_consumo_documents_its_table_in_the_catalog() -> None:
    """Column schema from the SQLAlchemy table, table name and owners (the UI's catalog view);
    dagster/row_count comes with each materialization (warehouse/test_assets)."""
    import dagster as dg

    from feedlot_pipeline.warehouse.schema import historico_consumo as table

    node = defs.resolve_asset_graph().get(dg.AssetKey("historico_consumo"))
    schema = node.metadata["dagster/column_schema"]
    assert [c.name for c in schema.columns] == [c.name for c in table.columns]
    by_name = {c.name: c for c in schema.columns}
    assert by_name["id_treated_data"].description == "primary key"
    assert by_name["id_lote"].type.startswith("VARCHAR")  # 14-digit ids are text, never INT
    assert not by_name["id_treated_data"].constraints.nullable
    assert node.metadata["dagster/table_name"] == "warehouse.historico_consumo"
    assert node.owners == ["team:data-engineering"]
