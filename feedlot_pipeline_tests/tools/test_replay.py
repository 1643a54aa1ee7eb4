"""``feedlot replay``: partitions rebuilt from the raw zone as real Dagster runs, nothing twice."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.tools.cli import main
from feedlot_pipeline.tools.replay import REPLAY_TAG
from feedlot_pipeline_tests.helpers import CLIENTS, NOW, batch, expected_valid, record

QUEUED_INSTANCE = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


@pytest.fixture()
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME of this test (SQLite storage), as `feedlot local up` would export one."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def replay(*args: str) -> Result:
    return CliRunner().invoke(main, ["replay", *args])


def snapshot(url: str) -> tuple[list, list]:
    """Every warehouse row (row_ts included) and every rejection, in a stable order."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM historico_consumo ORDER BY id_treated_data")).all()
        rejections = conn.execute(
            text(
                "SELECT fazenda, dia, raw_object_key, line_no, reason_code, reason "
                "FROM historico_consumo_rejeitados ORDER BY raw_object_key, line_no"
            )
        ).all()
    engine.dispose()
    return rows, rejections


def test_replay_twice_writes_nothing_twice(aws, warehouse_url, dagster_home) -> None:
    settings, _ = aws
    records = batch()  # five good records, one duplicate, three bad ones
    land_records(
        records, source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )
    land_records(  # a second day for the same farm, and a day of another farm (not replayed)
        [record(day="2023-01-03")],
        source="sns",
        event_id="e2",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    land_records(
        [record("FazendaDois")],
        source="sns",
        event_id="e3",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    valid = expected_valid(records)

    first = replay(
        "--farm", "fazenda_um", "--from", "2022-12-31", "--to", "2023-01-04", "--in-process"
    )
    assert first.exit_code == 0, first.output
    assert "2 partition(s) with raw objects (2 object(s)); 3 day(s) without" in first.output
    assert "registered farm partition fazenda_um" in first.output
    assert "2 SUCCESS" in first.output
    assert f"0 → {valid}" in first.output  # the summary's rows before → after
    rows, rejections = snapshot(warehouse_url)
    assert len(rows) == valid + 1
    assert len(rejections) == len(records) - valid - 1  # the repeated record is no rejection
    assert {r.fazenda for r in rows} == {"fazenda_um"}

    second = replay(
        "--farm", "fazenda_um", "--from", "2023-01-01", "--to", "2023-01-03", "--in-process"
    )
    assert second.exit_code == 0, second.output
    assert f"{valid} → {valid}" in second.output
    rejected = len(records) - valid - 1
    assert f"{rejected} → {rejected}" in second.output
    # Nothing written twice: same rows, same row_ts (no update), rejections replaced.
    assert snapshot(warehouse_url) == (rows, rejections)

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="ingest_consumption_job"))
        assert len(runs) == 4
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert sorted(r.tags["dagster/partition"] for r in runs) == [
            "2023-01-01|fazenda_um",
            "2023-01-01|fazenda_um",
            "2023-01-03|fazenda_um",
            "2023-01-03|fazenda_um",
        ]
        assert len({r.tags[REPLAY_TAG] for r in runs}) == 2  # one id per replay command
        mats = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("historico_consumo"),
                asset_partitions=["2023-01-01|fazenda_um"],
            ),
            limit=10,
        ).records
        latest = mats[0].asset_materialization.metadata
        assert (latest["inserted"].value, latest["updated"].value) == (0, 0)
        assert latest["unchanged"].value == valid + 1  # the repeated record too


def test_clear_errors_and_dry_run(aws, dagster_home) -> None:
    settings, _ = aws
    land_records(
        [record()], source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )

    unknown = replay("--farm", "fazenda_tres", "--from", "2023-01-01", "--to", "2023-01-02")
    assert unknown.exit_code == 1
    assert "unknown farm 'fazenda_tres'" in unknown.output

    empty = replay("--farm", "fazenda_um", "--from", "2023-02-01", "--to", "2023-02-28")
    assert empty.exit_code == 1
    assert "no raw objects for fazenda_um between 2023-02-01 and 2023-02-28" in empty.output

    backwards = replay("--farm", "fazenda_um", "--from", "2023-01-02", "--to", "2023-01-01")
    assert backwards.exit_code == 1 and "before --from" in backwards.output

    bad_day = replay("--farm", "fazenda_um", "--from", "yesterday", "--to", "2023-01-01")
    assert bad_day.exit_code == 2 and "is not a day" in bad_day.output

    traversal = replay("--farm", "../etc", "--from", "2023-01-01", "--to", "2023-01-01")
    assert traversal.exit_code == 1 and "invalid fazenda" in traversal.output

    dry = replay("--farm", "fazenda_um", "--from", "2023-01-01", "--to", "2023-01-02", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would run 2023-01-01|fazenda_um  (1 raw object(s))" in dry.output
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []


def test_submitted_runs_wait_in_the_run_queue_for_the_daemon(
    aws, warehouse_url, dagster_home
) -> None:
    """Without --in-process the runs go to the instance's queue, from the code location the
    daemon loads (workspace.yaml), as `dagster job launch` would submit them."""
    settings, _ = aws
    (dagster_home / "dagster.yaml").write_text(QUEUED_INSTANCE)
    land_records(
        [record()], source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )

    result = replay(
        "--farm", "fazenda_um", "--from", "2023-01-01", "--to", "2023-01-01", "--no-wait"
    )
    assert result.exit_code == 0, result.output
    assert "QUEUED" in result.output
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.QUEUED
        assert run.job_name == "ingest_consumption_job"
        assert run.tags["dagster/partition"] == "2023-01-01|fazenda_um"
        assert run.tags["dagster/partition/fazenda"] == "fazenda_um"
        assert run.tags["feedlot/trigger"] == "replay"
        # The daemon launches it from this code location (workspace.yaml's python_module).
        assert run.remote_job_origin.location_name == "feedlot_pipeline"  # one name everywhere
        assert run.job_code_origin is not None
