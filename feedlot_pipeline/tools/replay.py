"""``feedlot replay --farm F --from D --to D``: rebuild farm × day partitions from the raw zone.

The raw zone is the source of truth: every ``historico_consumo`` partition is derived from the
objects under ``historico_diario/<farm>/<yyyy>/<mm>/<dd>/``. A replay re-runs
``ingest_consumption_job`` for each day of the range that has raw objects; the load is an upsert
keyed by ``id_treated_data`` that writes nothing for an unchanged record and replaces the
partition's rejections, so a replay writes nothing twice.

Runs are real Dagster runs in the instance of DAGSTER_HOME (``feedlot local up`` writes it to
``.feedlot/env``, which is read when DAGSTER_HOME is not set):

- by default they are *submitted* through the instance's run coordinator (the local stack queues
  them: a running ``dagster dev`` or ``dagster-daemon run`` launches them, one per partition at a
  time, behind any sensor run of the same partition), the way ``dagster job launch`` does;
- with ``--in-process`` they are executed here, one after another, with ``dagster.execute_job``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click
import dagster as dg

from feedlot_pipeline import CODE_LOCATION
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.lake import RAW_PREFIX, check_farm, partition_prefix
from feedlot_pipeline.core.settings import LocalSettings, Settings, export
from feedlot_pipeline.ingestion.partitions import (
    DAY_DIMENSION,
    farm_day_key,
    farm_day_partitions,
    farms_partitions,
)

JOB_NAME = "ingest_consumption_job"
TRIGGER_TAG = "feedlot/trigger"
REPLAY_TAG = "feedlot/replay"
MAX_DAYS = 3660
TERMINAL = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


class ReplayError(click.ClickException):
    """A replay that cannot start: unknown farm, empty or invalid range."""


@dataclass(frozen=True)
class Partition:
    """One farm × day of the range that has raw objects."""

    fazenda: str
    dia: date
    raw_objects: int

    @property
    def key(self) -> str:
        return str(farm_day_key(self.fazenda, self.dia))

    def tags(self, replay_id: str) -> dict[str, str]:
        return {
            **farm_day_partitions.get_tags_for_partition_key(self.key),
            TRIGGER_TAG: "replay",
            REPLAY_TAG: replay_id,
        }


@dataclass
class Outcome:
    partition: Partition
    run_id: str
    status: str = "QUEUED"
    rows_before: int | None = None
    rejected_before: int | None = None
    rows_after: int | None = None
    rejected_after: int | None = None


# --- planning ------------------------------------------------------------------------------------


def days(start: date, end: date) -> Iterator[date]:
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def _count_objects(bucket: str, prefix: str, limit: int | None = None) -> int:
    s3 = client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": limit or 1000}
    ):
        count += page.get("KeyCount", 0)
        if limit is not None and count >= limit:
            break
    return count


def plan(fazenda: str, start: date, end: date, bucket: str | None = None) -> list[Partition]:
    """The partitions of the range that have raw objects; ReplayError when there are none."""
    bucket = bucket or Settings().lake_bucket
    try:
        check_farm(fazenda)
    except ValueError as err:
        raise ReplayError(str(err)) from None
    if end < start:
        raise ReplayError(f"--to {end} is before --from {start}")
    if (end - start).days >= MAX_DAYS:
        raise ReplayError(f"the range spans more than {MAX_DAYS} days; replay it in parts")
    day_partitions = farm_day_partitions.get_partitions_def_for_dimension(DAY_DIMENSION)
    first, last = day_partitions.get_first_partition_key(), day_partitions.get_last_partition_key()
    if start.isoformat() < str(first) or end.isoformat() > str(last):
        raise ReplayError(f"days must lie between {first} and {last} (the daily partitions)")
    if not _count_objects(bucket, f"{RAW_PREFIX}/{fazenda}/", limit=1):
        raise ReplayError(
            f"unknown farm {fazenda!r}: nothing under {RAW_PREFIX}/{fazenda}/ in s3://{bucket}"
        )
    found = [
        Partition(fazenda, day, n)
        for day in days(start, end)
        if (n := _count_objects(bucket, partition_prefix(fazenda, day)))
    ]
    if not found:
        raise ReplayError(
            f"no raw objects for {fazenda} between {start} and {end} in s3://{bucket} "
            "(nothing to replay)"
        )
    return found


def register_farm(instance: dg.DagsterInstance, fazenda: str) -> bool:
    """Add the farm's dynamic partition if this instance has not seen it (True when added)."""
    if instance.has_dynamic_partition(farms_partitions.name, fazenda):
        return False
    instance.add_dynamic_partitions(farms_partitions.name, [fazenda])
    return True


# --- warehouse figures ---------------------------------------------------------------------------


class Counter:
    """Rows and rejections of a partition, when a warehouse is configured."""

    def __init__(self, url: str | None) -> None:
        from feedlot_pipeline.warehouse.store import Warehouse

        self.warehouse = Warehouse(url) if url else None

    def __call__(self, partition: Partition) -> tuple[int | None, int | None]:
        if self.warehouse is None:
            return None, None
        where = (partition.fazenda, partition.dia)
        rows = self.warehouse.partition_row_counts([where])[where]
        return rows, self.warehouse.partition_rejection_counts([where])[where]

    def close(self) -> None:
        if self.warehouse is not None:
            self.warehouse.dispose()


# --- running -------------------------------------------------------------------------------------


def replay_job() -> dg.JobDefinition:
    """The platform's ingest job with resources read from the environment now.

    Module scope, so ``dg.reconstructable`` can rebuild it; ``definitions.defs`` binds its
    resources when first imported, which would pin the bucket of that moment.
    """
    from feedlot_pipeline.definitions import build_resources
    from feedlot_pipeline.ingestion.assets import raw_consumption
    from feedlot_pipeline.warehouse.assets import historico_consumo
    from feedlot_pipeline.warehouse.jobs import ingest_consumption_job

    return dg.Definitions(
        assets=[raw_consumption, historico_consumo],
        jobs=[ingest_consumption_job],
        resources=build_resources(),
    ).resolve_job_def(JOB_NAME)


def run_in_process(
    instance: dg.DagsterInstance, partition: Partition, replay_id: str
) -> tuple[str, str]:
    """Execute one partition's run here; (run id, final status)."""
    with dg.execute_job(
        dg.reconstructable(replay_job),
        instance=instance,
        tags=partition.tags(replay_id),
        raise_on_error=False,
    ) as result:
        status = instance.get_run_by_id(result.run_id).status.value
        return result.run_id, status


@contextmanager
def workspace(instance: dg.DagsterInstance, path: Path | None) -> Iterator[Any]:
    """The code location the daemon uses (workspace.yaml), served by a gRPC code server."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget, WorkspaceFileTarget

    if path is None:
        candidate = Path(__file__).resolve().parents[3] / "workspace.yaml"
        path = candidate if candidate.exists() else None
    target = (
        WorkspaceFileTarget(paths=[str(path)])
        if path is not None
        else ModuleTarget(
            module_name="feedlot_pipeline.definitions",
            attribute="defs",
            working_directory=None,
            location_name=CODE_LOCATION,
        )
    )
    with WorkspaceProcessContext(instance, target) as process:
        yield process.create_request_context()


class Submitter:
    """Create runs of the job from its code location and hand them to the run coordinator.

    What ``dagster job launch`` does: the run carries the job's remote origin, so the daemon's
    run queue can launch it from the same code location.
    """

    def __init__(self, instance: dg.DagsterInstance, context: Any) -> None:
        from dagster._core.definitions.selector import JobSubsetSelector

        self.instance = instance
        self.context = context
        entries = context.get_code_location_entries()
        for name in entries:
            location = context.get_code_location(name)
            for repo in location.get_repositories().values():
                if repo.has_job(JOB_NAME):
                    self.location, self.repo = location, repo
                    selector = JobSubsetSelector(
                        location_name=name,
                        repository_name=repo.name,
                        job_name=JOB_NAME,
                        op_selection=None,
                    )
                    self.job = location.get_job(selector)
                    self.plan = location.get_execution_plan(
                        self.job,
                        {},
                        step_keys_to_execute=None,
                        known_state=None,
                        instance=instance,
                    ).execution_plan_snapshot
                    return
        errors = [f"{n}: {e.load_error}" for n, e in entries.items() if e.load_error]
        raise click.ClickException(
            f"no code location defines {JOB_NAME}" + (f" ({'; '.join(errors)})" if errors else "")
        )

    def submit(self, partition: Partition, replay_id: str) -> tuple[str, str]:
        run = self.instance.create_run(
            job_name=JOB_NAME,
            run_id=None,
            run_config={},
            resolved_op_selection=None,
            step_keys_to_execute=self.plan.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**self.job.tags, **partition.tags(replay_id)},
            job_snapshot=self.job.job_snapshot,
            execution_plan_snapshot=self.plan,
            parent_job_snapshot=self.job.parent_job_snapshot,
            remote_job_origin=self.job.get_remote_origin(),
            job_code_origin=self.job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self.repo.asset_graph,
        )
        submitted = self.instance.submit_run(run.run_id, self.context)
        return submitted.run_id, submitted.status.value


def wait_for(
    instance: dg.DagsterInstance, run_ids: list[str], timeout: float, echo: Any = click.echo
) -> dict[str, str]:
    """Poll until every run is finished or ``timeout`` passes; run id → status."""
    deadline = time.monotonic() + timeout
    hinted = False
    started = time.monotonic()
    while True:
        records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
        status = {r.dagster_run.run_id: r.dagster_run.status for r in records}
        if all(s in TERMINAL for s in status.values()) or time.monotonic() > deadline:
            return {run_id: s.value for run_id, s in status.items()}
        if (
            not hinted
            and time.monotonic() - started > 30
            and all(s == dg.DagsterRunStatus.QUEUED for s in status.values())
        ):
            echo(
                "runs are still queued after 30 s: is `dagster dev` (or dagster-daemon run) "
                "running on this DAGSTER_HOME?"
            )
            hinted = True
        time.sleep(1.0)


def load_stack_env(state_dir: str | None) -> list[str]:
    """Without DAGSTER_HOME, take the local stack's variables from ``.feedlot/env``."""
    if LocalSettings().dagster_home is not None:
        return []
    from feedlot_pipeline.local import stack

    try:
        values = stack.env(state_dir)
    except stack.ServiceError as err:
        raise click.ClickException(f"DAGSTER_HOME is not set and {err}") from None
    return export(values, override=False)


# --- command -------------------------------------------------------------------------------------


def _iso_day(_ctx: Any, _param: Any, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)") from None


def _figure(before: int | None, after: int | None) -> str:
    if before is None:
        return "-"
    return f"{before} → {after if after is not None else '?'}"


@click.command()
@click.option("--farm", "fazenda", required=True, help="Farm (fazenda) partition, e.g. fazenda_um.")
@click.option("--from", "start", required=True, callback=_iso_day, metavar="YYYY-MM-DD")
@click.option("--to", "end", required=True, callback=_iso_day, metavar="YYYY-MM-DD")
@click.option("--dry-run", is_flag=True, help="List the partitions that would run; run nothing.")
@click.option(
    "--in-process",
    is_flag=True,
    help="Execute the runs here, one by one, instead of submitting them to the run queue.",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for submitted runs.")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--workspace",
    "workspace_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="workspace.yaml of the code location (default: the repository's).",
)
@click.option("--state-dir", default=None, help="Local stack folder whose env file to read.")
def replay(
    fazenda: str,
    start: date,
    end: date,
    dry_run: bool,
    in_process: bool,
    wait: bool,
    timeout: float,
    workspace_path: Path | None,
    state_dir: str | None,
) -> None:
    """Re-run the historico_consumo partitions of FARM from the raw zone, day FROM to day TO.

    Only days with raw objects run. The load is an idempotent upsert: a replay writes nothing
    twice (rows unchanged, row_ts kept, the partition's rejections replaced). Runs are Dagster
    runs of ingest_consumption_job in DAGSTER_HOME's instance (read from .feedlot/env when
    unset), submitted to its run queue (a running `dagster dev` launches them) or, with
    --in-process, executed here.
    """
    load_stack_env(state_dir)
    partitions = plan(fazenda, start, end)
    total = sum(p.raw_objects for p in partitions)
    click.echo(
        f"replay {fazenda} {start}..{end}: {len(partitions)} partition(s) with raw objects "
        f"({total} object(s)); {(end - start).days + 1 - len(partitions)} day(s) without"
    )
    if dry_run:
        for p in partitions:
            click.echo(f"  would run {p.key}  ({p.raw_objects} raw object(s))")
        return

    replay_id = uuid.uuid4().hex[:12]
    counter = Counter(Settings().warehouse_url_value())
    outcomes: list[Outcome] = []
    try:
        with dg.DagsterInstance.get() as instance:
            if register_farm(instance, fazenda):
                click.echo(f"registered farm partition {fazenda} in this Dagster instance")
            before = {p.key: counter(p) for p in partitions}
            if in_process:
                for i, p in enumerate(partitions, 1):
                    click.echo(f"[{i}/{len(partitions)}] {p.key}: running in process…")
                    run_id, status = run_in_process(instance, p, replay_id)
                    outcomes.append(Outcome(p, run_id, status))
                    click.echo(f"[{i}/{len(partitions)}] {p.key}: run {run_id} {status}")
            else:
                click.echo("loading the code location to submit runs…")
                with workspace(instance, workspace_path) as context:
                    submitter = Submitter(instance, context)
                    for i, p in enumerate(partitions, 1):
                        run_id, status = submitter.submit(p, replay_id)
                        outcomes.append(Outcome(p, run_id, status))
                        click.echo(f"[{i}/{len(partitions)}] {p.key}: run {run_id} {status}")
                if wait:
                    click.echo(f"waiting for {len(outcomes)} run(s) (up to {timeout:.0f} s)…")
                    final = wait_for(instance, [o.run_id for o in outcomes], timeout)
                    for o in outcomes:
                        o.status = final.get(o.run_id, o.status)
            for o in outcomes:
                o.rows_before, o.rejected_before = before[o.partition.key]
                if o.status in {s.value for s in TERMINAL}:
                    o.rows_after, o.rejected_after = counter(o.partition)
    finally:
        counter.close()

    click.echo(f"\nreplay {replay_id} (tag {REPLAY_TAG}={replay_id}):")
    click.echo(f"  {'PARTITION':32} {'RUN':36} {'STATUS':9} {'ROWS':>13} {'REJECTED':>13}")
    for o in outcomes:
        click.echo(
            f"  {o.partition.key:32} {o.run_id:36} {o.status:9} "
            f"{_figure(o.rows_before, o.rows_after):>13} "
            f"{_figure(o.rejected_before, o.rejected_after):>13}"
        )
    by_status: dict[str, int] = {}
    for o in outcomes:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    click.echo("  " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    # Waited for (the default): anything but SUCCESS fails the command. Not waited for: only a
    # run that already failed or was canceled does.
    bad = {"FAILURE", "CANCELED"} if not (wait or in_process) else None
    unfinished = [o for o in outcomes if (o.status in bad if bad else o.status != "SUCCESS")]
    if unfinished:
        # Queued or still running counts as not done: a replay that did not replay must not
        # look like one that did (exit 0 means every partition was reloaded).
        click.echo(
            f"{len(unfinished)} run(s) did not succeed"
            + (f" within {timeout:.0f} s" if not in_process else "")
            + ": see the runs above in the Dagster UI",
            err=True,
        )
        raise SystemExit(1)
