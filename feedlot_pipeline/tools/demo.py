"""``feedlot demo``: the main job end to end on the local stack, headless.

Publishes records through SNS, lets the real Dagster daemon run the real sensor and partition
runs against the PostgreSQL-backed instance, waits until every notice is handled, and prints what
the warehouse holds for the partitions it touched. A second run of the same files reports zero
new rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from feedlot_pipeline.core.settings import LocalSettings, Settings, export
from feedlot_pipeline.tools.workspace import write_workspace

SAMPLE_DIR = Path(__file__).parents[1] / "sample"
PARTITION_TAG = "dagster/partition"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class Progress:
    queued_notices: int
    runs: dict[str, str]  # run id -> status

    def done(self) -> bool:
        return self.queued_notices == 0 and all(s in TERMINAL for s in self.runs.values())


def sample_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.jsonl"))


def _queue_depth() -> int:
    from feedlot_pipeline.core.aws import client, queue_url

    attrs = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(Settings().sensor_queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def _daemon_alive(instance) -> bool:
    """A daemon (e.g. `dagster dev`'s) heartbeating for this instance (it beats every 30 s)."""
    beats = instance.get_daemon_heartbeats()
    now = time.time()
    return any(now - hb.timestamp < 45 for hb in beats.values())


def _start_daemon(log_dir: Path) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "dagster-daemon.log", "ab")  # noqa: SIM115 - handed to the child
    workspace = write_workspace(log_dir.parent)
    return subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", str(workspace)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
    )


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _runs_since(instance, since: datetime) -> dict[str, tuple[str, str | None]]:
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(job_name="ingest_batch_job", created_after=since)
    )
    return {
        r.dagster_run.run_id: (
            r.dagster_run.status.value,
            r.dagster_run.tags.get("dagster/partition"),
        )
        for r in records
    }


def wait_for_analytics(
    instance, since: datetime, partitions: list[tuple[str, str]], timeout: float
) -> list[str]:
    """Wait until successful analytics runs since ``since`` covered every partition; the ids of
    the runs that did not succeed."""
    import dagster as dg

    from feedlot_pipeline.analytics.refresh import JOB_NAME

    wanted = {f"{f}/{d}" for f, d in partitions if f != "_unrouted"}
    deadline = time.monotonic() + timeout
    last_line = ""
    while True:
        records = instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME, created_after=since))
        covered: set[str] = set()
        failed = []
        for r in records:
            run = r.dagster_run
            if run.status == dg.DagsterRunStatus.SUCCESS:
                config = run.run_config["ops"]["refresh_loaded_partitions"]["config"]
                covered.update(config["partitions"])
            elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                failed.append(run.run_id)
        line = f"  analytics runs {len(records):>3} | partitions refreshed {len(wanted & covered)}"
        if line != last_line:
            click.echo(line + f" of {len(wanted)}")
            last_line = line
        if wanted <= covered:
            return failed
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"timed out after {timeout:.0f}s waiting for analytics: "
                f"{len(wanted - covered)} partition(s) not refreshed (logs under .feedlot/logs)"
            )
        time.sleep(1)


def wait_for_pipeline(instance, since: datetime, timeout: float, quiet_seconds: float) -> Progress:
    """Wait until the queue is empty and every run since ``since`` has finished, stably."""
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    last_line = ""
    while True:
        runs = _runs_since(instance, since)
        progress = Progress(_queue_depth(), {k: v[0] for k, v in runs.items()})
        finished = sum(s in TERMINAL for s in progress.runs.values())
        line = (
            f"  notices queued {progress.queued_notices:>4} | runs {len(runs):>3} "
            f"(finished {finished})"
        )
        if line != last_line:
            click.echo(line)
            last_line = line
        if progress.done() and runs:
            settled_at = settled_at or time.monotonic()
            if time.monotonic() - settled_at >= quiet_seconds:
                return progress
        else:
            settled_at = None
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"timed out after {timeout:.0f}s: {progress.queued_notices} notices queued, "
                f"{len(runs) - finished} runs unfinished (logs under .feedlot/logs)"
            )
        time.sleep(1)


def _summary(engine, partitions: list[tuple[str, str]]) -> dict:
    """Per-partition counts, rejection reasons and consumo_meta stats, parameterised SQL only."""
    from datetime import date, timedelta

    from sqlalchemy import text

    out: dict = {"partitions": [], "rejections": {}, "consumo_meta": {}}
    with engine.connect() as conn:
        for fazenda, dia in partitions:
            day = date.fromisoformat(dia)
            window = {"f": fazenda, "d0": day, "d1": day + timedelta(days=1), "d": day}
            rows = conn.execute(
                text(
                    "SELECT count(*), min(consumo_meta), avg(consumo_meta), max(consumo_meta), "
                    "min(regra_consumo_meta) FROM historico_consumo "
                    "WHERE fazenda = :f AND data >= :d0 AND data < :d1"
                ),
                window,
            ).one()
            rejected = conn.execute(
                text(
                    "SELECT reason_code, count(*), min(reason) FROM historico_consumo_rejeitados "
                    "WHERE fazenda = :f AND dia = :d GROUP BY reason_code"
                ),
                window,
            ).all()
            out["partitions"].append((fazenda, dia, rows[0], sum(r[1] for r in rejected)))
            for code, count, example in rejected:
                total, _ = out["rejections"].get(code, (0, example))
                out["rejections"][code] = (total + count, example)
            if rows[0]:
                n, lo, avg, hi, rule = out["consumo_meta"].get(fazenda, (0, None, 0.0, None, ""))
                out["consumo_meta"][fazenda] = (
                    n + rows[0],
                    rows[1] if lo is None else min(lo, rows[1]),
                    avg + float(rows[2]) * rows[0],
                    rows[3] if hi is None else max(hi, rows[3]),
                    rows[4],
                )
    return out


def loaded_partitions(run_ids: list[str]) -> list[tuple[str, str]]:
    """(fazenda, dia) of every raw object these runs loaded, from the load ledger."""
    import sqlalchemy as sa

    from feedlot_pipeline.warehouse.schema import historico_consumo_cargas as ledger
    from feedlot_pipeline.warehouse.store import Warehouse

    if not run_ids:
        return []
    with Warehouse.from_env() as wh, wh.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.fazenda, ledger.c.dia).where(ledger.c.run_id.in_(run_ids)).distinct()
        ).all()
    return sorted((fazenda, str(dia)[:10]) for fazenda, dia in rows)


def count_rows(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar_one()


def report(partitions: list[tuple[str, str]], rows_before: int) -> int:
    """Print rows per farm and day, rejections and consumo_meta statistics; return new rows."""
    from feedlot_pipeline.warehouse.store import Warehouse

    wh = Warehouse.from_env()
    try:
        summary = _summary(wh.engine, partitions)
        rows_after = count_rows(wh.engine)
    finally:
        wh.dispose()
    click.echo("\nRows per farm and day (historico_consumo)")
    click.echo(f"  {'fazenda':<14}{'dia':<12}{'rows':>6}{'rejected':>10}")
    for fazenda, dia, rows, rejected in summary["partitions"]:
        click.echo(f"  {fazenda:<14}{dia:<12}{rows:>6}{rejected:>10}")
    click.echo("\nRejected records by reason")
    if not summary["rejections"]:
        click.echo("  none")
    for code, (count, example) in sorted(summary["rejections"].items()):
        click.echo(f"  {code:<20}{count:>6}  e.g. {example}")
    click.echo("\nconsumo_meta (kg/day) by farm")
    click.echo(f"  {'fazenda':<14}{'rows':>6}{'min':>10}{'avg':>10}{'max':>10}  rule")
    for fazenda, (n, lo, total, hi, rule) in sorted(summary["consumo_meta"].items()):
        click.echo(f"  {fazenda:<14}{n:>6}{lo:>10.3f}{total / n:>10.3f}{hi:>10.3f}  {rule}")
    new_rows = rows_after - rows_before
    click.echo(f"\nNew rows in historico_consumo this run: {new_rows} (table total {rows_after})")
    return new_rows


def print_metrics(minutes: int = 15) -> None:
    """What ``feedlot metrics`` shows for the demo's window (best effort: never fails the demo)."""
    from feedlot_pipeline.tools.metrics import show

    try:
        text = show(minutes)
    except Exception as err:  # noqa: BLE001 - the demo's result stands without its metrics
        click.echo(f"\n(metrics not shown: {type(err).__name__}: {err})")
        return
    click.echo(f"\nMetrics (`feedlot metrics --local --minutes {minutes}`)")
    click.echo(text, nl=False)


@click.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the runs.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: LocalSettings().state_dir,
    show_default=".feedlot",
)
def demo(files: tuple[Path, ...], timeout: float, state_dir: Path) -> None:
    """Publish FILES (default: the shipped sample) via SNS and watch them reach the warehouse."""
    from dagster import DagsterInstance

    from feedlot_pipeline.local import stack
    from feedlot_pipeline.tools.produce.command import publish_files
    from feedlot_pipeline.warehouse.store import Warehouse

    click.echo("Starting the local stack …")
    stack.up(state_dir)
    export(stack.env(state_dir))
    paths = list(files) or sample_files()
    if not paths:
        raise click.ClickException(f"no files given and no sample data in {SAMPLE_DIR}")

    instance = DagsterInstance.get()
    daemon = None
    if _daemon_alive(instance):
        click.echo("Using the Dagster daemon already running for this instance.")
    else:
        click.echo("Starting the Dagster daemon (sensor + run queue) …")
        daemon = _start_daemon(Path(state_dir) / "logs")
    try:
        wh = Warehouse.from_env()
        try:
            rows_before = count_rows(wh.engine)
        finally:
            wh.dispose()
        since = datetime.now(timezone.utc)
        click.echo(f"Publishing {len(paths)} file(s) to SNS …")
        published = publish_files(paths, progress=False)
        click.echo(f"  published {published.records} records in {published.messages} messages")
        click.echo("Waiting for the sensor and its batch runs …")
        interval = Settings().sensor_interval_seconds
        progress = wait_for_pipeline(instance, since, timeout, quiet_seconds=2 * interval + 2)
        runs = _runs_since(instance, since)
        partitions = loaded_partitions(list(runs))
        click.echo("Waiting for the analytics refresh (analytics_refresh_sensor) …")
        failed_analytics = wait_for_analytics(instance, since, partitions, timeout)
    finally:
        if daemon is not None:
            _stop(daemon)
            # A stopped daemon's last heartbeat stays fresh for a while: clear it, or the next
            # demo would wait on a daemon that no longer runs.
            instance.wipe_daemon_heartbeats()
    failed = [rid for rid, (status, _) in runs.items() if status != "SUCCESS"]
    failed += failed_analytics
    click.echo(
        f"\n{len(progress.runs)} batch run(s) for {len(partitions)} farm × day partition(s), "
        f"{len(failed)} not successful"
    )
    report(partitions, rows_before)
    analytics_report(partitions, Path(state_dir))
    print_metrics()
    if failed:
        raise click.ClickException(f"runs not successful: {', '.join(failed)}")


def analytics_report(partitions: list[tuple[str, str]], state_dir: Path) -> None:
    """The analytics layer's end of the demo: summary per farm and day, and the report paths.

    The summaries were refreshed by the analytics runs (analytics_refresh_sensor, waited for
    before); this prints consumo_diario per farm and day and writes each farm's report of its
    last day locally (and to the processed bucket).
    """
    from datetime import date

    from feedlot_pipeline.analytics.report import build_report, publish_report, render_html
    from feedlot_pipeline.analytics.targets import AnalyticsTargets
    from feedlot_pipeline.warehouse.store import Warehouse

    parts = sorted({(f, date.fromisoformat(d)) for f, d in partitions if f != "_unrouted"})
    if not parts:
        return
    targets = AnalyticsTargets.from_settings()
    wh = Warehouse.from_env()
    try:
        click.echo("\nDaily summary per farm and day (consumo_diario)")
        click.echo(
            f"  {'fazenda':<14}{'dia':<12}{'lots':>5}{'animals':>9}{'kg fed':>11}"
            f"{'real/cab':>10}{'meta/cab':>10}{'desvio %':>10}{'anomalies':>11}"
        )
        last: dict[str, date] = {}
        for fazenda, dia in parts:
            data = build_report(wh, fazenda, dia)
            desvio = "" if data.desvio_pct is None else f"{data.desvio_pct:.2f}"
            click.echo(
                f"  {fazenda:<14}{dia.isoformat():<12}{len(data.lots):>5}{data.animais:>9,}"
                f"{data.total_kg:>11,.1f}{data.real:>10.3f}{data.meta:>10.3f}{desvio:>10}"
                f"{len(data.anomalies):>11}"
            )
            last[fazenda] = max(dia, last.get(fazenda, dia))
        click.echo("\nFarm reports")
        for fazenda, dia in sorted(last.items()):
            data = build_report(wh, fazenda, dia)
            folder = state_dir / "reports" / fazenda
            folder.mkdir(parents=True, exist_ok=True)
            path = (folder / f"relatorio_{dia.isoformat()}.html").resolve()
            path.write_text(render_html(data), encoding="utf-8")
            uri, _ = publish_report(targets, data, dia)
            click.echo(f"  {fazenda} {dia}: {path}  ({uri})")
    finally:
        wh.dispose()
