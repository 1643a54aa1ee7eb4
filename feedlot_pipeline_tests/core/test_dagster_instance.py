"""The local Dagster instance (dagster.yaml): pooled event-log storage, monitored run workers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import WorkerStatus
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feedlot_pipeline.core.dagster_instance import MonitoredRunLauncher, PooledPostgresStorage

REPO_YAML = Path(__file__).parents[2] / "dagster.yaml"


@pytest.fixture()
def instance(pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"feedlot_dg_{uuid.uuid4().hex[:10]}"
    server = make_url(pg_server_url)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("FEEDLOT_DAGSTER_STORAGE_URL", url)
    shutil.copy(REPO_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_the_event_log_keeps_its_connection(instance) -> None:
    assert instance.get_ref().storage_data.class_name == PooledPostgresStorage.__name__
    engine = instance.event_log_storage._engine
    assert engine.pool.__class__.__name__ == "QueuePool"
    run = create_run_for_test(instance, job_name="j")
    for i in range(20):
        instance.report_engine_event(f"event {i}", run)
    assert len(instance.all_logs(run.run_id)) == 20
    assert engine.pool.checkedin() >= 1  # kept for the next write, not closed


def test_a_run_whose_worker_died_is_seen_as_failed(instance) -> None:
    launcher = instance.run_launcher
    assert isinstance(launcher, MonitoredRunLauncher) and launcher.supports_check_run_worker_health
    run = create_run_for_test(instance, job_name="j", status=dg.DagsterRunStatus.STARTED)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.UNKNOWN  # no pid yet

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        instance.report_engine_event(
            f"Started process for run (pid: {worker.pid}).",
            run,
            EngineEventData.in_process(worker.pid),
        )
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    finally:
        worker.kill()
        worker.wait(10)
    result = launcher.check_run_worker_health(run)
    assert result.status == WorkerStatus.FAILED and str(worker.pid) in result.msg

    instance.report_engine_event(f"Process for run exited (pid: {worker.pid}).", run)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.SUCCESS


HISTORICO = dg.AssetKey("historico_consumo")


@dg.op
def many_check_results(context) -> None:  # no annotation: postponed ones are strings here
    from feedlot_pipeline.warehouse.events import log_check_evaluations

    log_check_evaluations(
        context,
        [
            dg.AssetCheckEvaluation(
                asset_key=HISTORICO,
                check_name="loaded_as_landed",
                passed=i != 7,
                partition=f"2024-01-01|fazenda_{i:03d}",
                metadata={"i": i},
            )
            for i in range(40)
        ],
    )


def test_a_batch_of_check_results_is_written_at_once(instance, monkeypatch) -> None:
    """Check results logged as a batch reach the storage as one batch (not one write each) and
    read back like any others: the latest result per partition, passed or failed."""
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    from feedlot_pipeline.core.dagster_instance import BatchedCheckEventLogStorage

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    storage = instance.event_log_storage
    assert isinstance(storage, BatchedCheckEventLogStorage)
    single, batches = [], []
    store_event, store_batch = storage.store_event, storage.store_event_batch
    monkeypatch.setattr(storage, "store_event", lambda e: (single.append(e), store_event(e)))
    monkeypatch.setattr(
        storage, "store_event_batch", lambda es: (batches.append(len(es)), store_batch(es))
    )
    job = dg.GraphDefinition(name="checks", node_defs=[many_check_results]).to_job()
    assert job.execute_in_process(instance=instance).success
    assert batches == [40]
    checks_alone = [e for e in single if e.dagster_event_type and "CHECK" in e.dagster_event_type]
    assert not checks_alone, [e.dagster_event_type for e in checks_alone][:3]
    key = dg.AssetCheckKey(HISTORICO, "loaded_as_landed")
    for i, status in ((3, "SUCCEEDED"), (7, "FAILED")):
        latest = storage.get_latest_asset_check_execution_by_key(
            [key], partition_filter=PartitionKeyFilter(key=f"2024-01-01|fazenda_{i:03d}")
        )[key]
        assert latest.status == AssetCheckExecutionRecordStatus[status]
        assert latest.event.dagster_event.asset_check_evaluation_data.metadata["i"].value == i
