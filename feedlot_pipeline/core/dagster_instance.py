"""Two pieces of the Dagster instance this platform configures in dagster.yaml.

- ``PooledPostgresStorage``: dagster-postgres's storage, with the event log holding one pooled
  connection per process instead of opening a new one per write (dagster-postgres uses NullPool
  outside the webserver). A streaming batch run logs two materializations and a check result per
  partition; measured here, 600 events took 17 s with a connection per write and 2-6 s pooled.
  ``pool_pre_ping`` keeps it safe across a restart of PostgreSQL. Its event log also writes a
  batch of check results (``warehouse.events.log_check_evaluations``) in two multi-row INSERTs
  (the events, then their check executions) where dagster-postgres refuses the batch and writes
  them one by one, three statements each.
- ``MonitoredRunLauncher``: Dagster's default run launcher (a run worker process per run, started
  by the code server), plus the worker health check run monitoring needs: a run whose worker
  process is gone (killed with the daemon, the machine rebooted) is failed by the monitoring
  daemon instead of staying STARTED forever and holding its concurrency slot. On ECS the
  EcsRunLauncher does the same with the task's status (deploy/dagster/dagster.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psutil
from dagster._core.event_api import EventLogEntry
from dagster._core.events import DagsterEventType
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._serdes import serialize_value
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_engine

STARTED_PROCESS = "Started process for run"
EXITED_PROCESS = "Process for run exited"
POOL_RECYCLE_SECONDS = 3600


class BatchedCheckEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres's event log, writing a batch of a run's check results at once."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        run_ids = {e.run_id for e in events}
        if (
            not events
            or len(run_ids) != 1
            or "" in run_ids
            or None in run_ids
            or any(e.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION for e in events)
        ):
            return super().store_event_batch(events)
        (run_id,) = run_ids
        with self._connect() as conn:
            ids = [
                int(row[0])
                for row in conn.execute(
                    self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
                )
            ]
        table = AssetCheckExecutionsTable
        with self.index_connection() as conn:
            # Rows planned for this run (an asset step that declared its checks) are updated one
            # by one, as Dagster does; the batch op's results have none and are inserted at once.
            planned = {
                (r.asset_key, r.check_name, r.partition)
                for r in conn.execute(
                    table.select()
                    .with_only_columns(table.c.asset_key, table.c.check_name, table.c.partition)
                    .where(table.c.run_id == run_id)
                )
            }
            rows = []
            for event, event_id in zip(events, ids, strict=True):
                evaluation = event.get_dagster_event().asset_check_evaluation_data
                key = (
                    evaluation.asset_key.to_string(),
                    evaluation.check_name,
                    evaluation.partition,
                )
                if key in planned:
                    self._update_asset_check_evaluation(event, event_id)
                    continue
                rows.append(
                    {
                        "asset_key": key[0],
                        "check_name": key[1],
                        "partition": key[2],
                        "run_id": run_id,
                        "execution_status": (
                            AssetCheckExecutionRecordStatus.SUCCEEDED.value
                            if evaluation.passed
                            else AssetCheckExecutionRecordStatus.FAILED.value
                        ),
                        "evaluation_event": serialize_value(event),
                        "evaluation_event_timestamp": self._event_insert_timestamp(event),
                        "evaluation_event_storage_id": event_id,
                        "materialization_event_storage_id": (
                            evaluation.target_materialization_data.storage_id
                            if evaluation.target_materialization_data
                            else None
                        ),
                    }
                )
            if rows:
                conn.execute(table.insert().values(rows))


class PooledPostgresStorage(DagsterPostgresStorage):
    """``storage: postgres:`` with a pooled event-log engine (same config, same tables)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_log_storage = BatchedCheckEventLogStorage(
            self.postgres_url, should_autocreate_tables=False
        )
        events = self._event_log_storage
        events._engine = create_pg_engine(  # noqa: SLF001 - the one knob dagster-postgres lacks
            events.postgres_url,
            getattr(events, "_token_provider", None),
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=4,
            pool_recycle=POOL_RECYCLE_SECONDS,
            pool_pre_ping=True,
        )

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> PooledPostgresStorage:
        base = DagsterPostgresStorage.from_config_value(inst_data, config_value)
        return cls(
            postgres_url=base.postgres_url,
            should_autocreate_tables=base.should_autocreate_tables,
            inst_data=inst_data,
        )


def worker_pid(instance: Any, run_id: str) -> tuple[int | None, bool]:
    """(pid of the run's worker process, whether it reported its own exit) from the event log."""
    pid: int | None = None
    exited = False
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        message = record.message or ""
        if message.startswith(STARTED_PROCESS):
            data = record.dagster_event.engine_event_data if record.dagster_event else None
            raw = (data.metadata or {}).get("pid") if data else None
            value = getattr(raw, "value", raw)
            if value is not None and str(value).isdigit():
                pid = int(str(value))
        elif message.startswith(EXITED_PROCESS):
            exited = True
    return pid, exited


class MonitoredRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers run monitoring can check (by pid, on this host)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid, exited = worker_pid(self._instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run worker has no pid yet")
        if psutil.pid_exists(pid):
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
            except psutil.NoSuchProcess:
                pass
        if exited:
            return CheckRunHealthResult(WorkerStatus.SUCCESS, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} is gone without finishing the run",
            run_worker_id=str(pid),
        )
