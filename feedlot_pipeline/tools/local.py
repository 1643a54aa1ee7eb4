"""``feedlot local up|down|status|env``: the local stack from a shell (logic in ``stack.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from feedlot_pipeline.core.settings import DEFAULTS
from feedlot_pipeline.local import stack
from feedlot_pipeline.local.services import ServiceError

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: str(stack.default_state_dir()),
    show_default="$FEEDLOT_STATE_DIR or .feedlot",
    help="Folder for pids, logs, the env file and PostgreSQL data.",
)


def _shown(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _table(services: list[stack.ServiceInfo]) -> None:
    for s in services:
        pid = f"pid {s.pid}" if s.pid else ""
        line = f"  {s.name:<14}{s.address:<26}{pid:<12}{s.state:<12}"
        extra = "  ".join(x for x in (s.detail, f"log {_shown(s.log)}" if s.log else "") if x)
        click.echo((line + extra).rstrip())


# (variable, what) of the settings `feedlot local` reads; defaults come from core.settings.
_SETTINGS = (
    ("FEEDLOT_STATE_DIR", "state folder"),
    ("FEEDLOT_MOTO_PORT", "moto server port"),
    ("FEEDLOT_MOTO_FSYNC", "fsync the lake's journal before each answer"),
    ("FEEDLOT_PG_PORT", "embedded PostgreSQL port"),
    ("FEEDLOT_LAMBDA_PORT", "Lambda bridge port"),
    ("FEEDLOT_INGEST_API_PORT", "local API gateway port, POST /consumo"),
    ("FEEDLOT_INGEST_API_KEY", "its API key (generated and kept when unset)"),
    ("FEEDLOT_SSM_AGENT_PORT", "local SSM agent / SSM endpoint port"),
    ("FEEDLOT_WAREHOUSE_URL", "use this server instead of an embedded one"),
    ("FEEDLOT_DAGSTER_STORAGE_URL", "Dagster storage (default: <warehouse db>_dagster beside it)"),
    ("FEEDLOT_SNS_HANDLER", "handler the bridge calls (module:function)"),
    ("FEEDLOT_LAMBDA_RETRY_SECONDS", "delays of the bridge's retries"),
    ("FEEDLOT_LAMBDA_CONCURRENCY", "concurrent invocations in the bridge"),
)


def _settings_help() -> str:
    lines = []
    for variable, what in _SETTINGS:
        default = DEFAULTS.get(variable)
        lines.append(f"  {variable:<30}{what}" + (f" ({default})" if default else ""))
    return "\n".join(lines)


@click.group(
    help="Start, stop or inspect the local stack (moto, PostgreSQL, Lambda bridge, API gateway, "
    "SSM agent).\n\n\b\nSettings (environment):\n" + _settings_help()
)
def local() -> None:
    pass


@local.command(short_help="Start the stack (reusing what runs) and print its environment.")
@_STATE_DIR
@click.option(
    "--accept-empty-lake",
    is_flag=True,
    help="Go on when the warehouse has rows but the lake has no raw objects (the lake was "
    "lost): those rows stay without raw data. Remembered until the lake is lost again.",
)
def up(state_dir: Path, accept_empty_lake: bool) -> None:
    """Start the stack (parts already running are reused) and print the environment to use.

    The local lake (S3 buckets and objects) and the dead-letter queues are kept in
    <state>/moto across restarts and crashes of moto; `up` refuses to start over a warehouse
    whose lake is gone unless --accept-empty-lake.
    """
    try:
        info = stack.up(state_dir, accept_empty_lake=accept_empty_lake)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Local stack up in {info.seconds:.1f} s (state in {_shown(info.state_dir)})")
    _table(info.services)
    click.echo(f"  SNS topic     {info.topic_arn}")
    click.echo(f"    → SQS inbox {info.subscription_arn} (polled by the Lambda bridge)")
    click.echo(f"  warehouse     {_redacted(info.env['FEEDLOT_WAREHOUSE_URL'])} (migrated)")
    click.echo(f"  dagster       {_redacted(info.env['FEEDLOT_DAGSTER_STORAGE_URL'])}")
    for note in info.notes:
        click.echo(f"  note: {note}")
    click.echo(
        f"\nEnvironment (also in {_shown(info.state_dir / 'env')}; "
        'load it with: eval "$(feedlot local env)"):'
    )
    click.echo(stack.export_lines(info.env), nl=False)


@local.command(short_help="Stop every process the stack started; --wipe deletes its data.")
@_STATE_DIR
@click.option(
    "--wipe",
    is_flag=True,
    help="Also delete the stack's data: the local lake and dead letters (<state>/moto) and the "
    "embedded PostgreSQL (warehouse, Dagster runs). A configured FEEDLOT_WAREHOUSE_URL is "
    "never touched.",
)
def down(state_dir: Path, wipe: bool) -> None:
    """Stop every process the stack started (emulators, moto, embedded PostgreSQL).

    The lake and the warehouse are kept for the next `up`, unless --wipe.
    """
    stopped = stack.down(state_dir, wipe=wipe)
    if not stopped:
        click.echo(f"Nothing to stop in {_shown(state_dir.resolve())}.")
        return
    for s in stopped:
        pid = f" (pid {s.pid})" if s.pid else ""
        detail = f": {s.detail}" if s.detail else ""
        click.echo(f"  {s.name:<14}{s.state}{pid}{detail}")


@local.command(short_help="Say what runs where; exit 1 when a part is down.")
@_STATE_DIR
def status(state_dir: Path) -> None:
    """Say what runs where; exit status 1 when any part is down or nothing was started."""
    info = stack.status(state_dir)
    if not info.services:
        click.echo(f"No local stack in {_shown(info.state_dir)}: run `feedlot local up`.")
        sys.exit(1)
    _table(info.services)
    for note in info.notes:
        click.echo(f"  note: {note}")
    down_parts = [s.name for s in info.services if not s.alive]
    if down_parts:
        click.echo(f"Down: {', '.join(down_parts)} (run `feedlot local up`)")
        sys.exit(1)


@local.command(name="env", short_help='Print the export lines: eval "$(feedlot local env)".')
@_STATE_DIR
def env_(state_dir: Path) -> None:
    """Print the export lines of the running stack: eval "$(feedlot local env)"."""
    try:
        values = stack.env(state_dir)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    click.echo(stack.export_lines(values), nl=False)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - printing only
        return url
