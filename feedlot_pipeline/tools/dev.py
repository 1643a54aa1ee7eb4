"""``feedlot dev``: the local stack and the Dagster UI, stopped by Ctrl-C or SIGTERM (``make dev``).

``dagster dev`` alone cannot be stopped when it was started in the background: a shell starts
background jobs with SIGINT ignored, Dagster maps SIGTERM to its SIGINT handler, and an ignored
SIGINT is inherited by it and by every process it starts, so only SIGKILL ends it (and leaves its
webserver, daemon and code servers behind). Here ``dagster dev`` runs in a process group of its
own with default signal handling; Ctrl-C, SIGTERM or SIGHUP to this command are passed on to it
as the SIGINT of a terminal's Ctrl-C, this command waits for the whole group to exit (SIGKILL
after ``--stop-seconds``) and says whether the local stack is still up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import psutil

from feedlot_pipeline.local import stack
from feedlot_pipeline.local.services import ServiceError
from feedlot_pipeline.tools.local import up as local_up
from feedlot_pipeline.tools.workspace import write_workspace

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_STOP_SECONDS = 30.0


def group_alive(pgid: int) -> list[psutil.Process]:
    """Processes of the group ``pgid`` that still run (zombies do not count)."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def stop_group(proc: subprocess.Popen, stop_seconds: float) -> str:
    """Stop ``dagster dev`` and everything in its group; how it ended.

    SIGINT goes to ``dagster dev`` alone first: it stops its webserver and daemon through their
    shutdown pipes, in order, and they stop their code servers (a Ctrl-C to the whole group
    interrupts them all at once). What is left in the group then (a run's process) gets SIGTERM,
    and SIGKILL when ``stop_seconds`` are up.
    """
    pgid = proc.pid
    deadline = time.monotonic() + stop_seconds
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(10)
        return f"killed after {stop_seconds:.0f} s"
    return "stopped"


def run_in_own_group(args: list[str], env: dict[str, str], cwd: Path, stop_seconds: float) -> int:
    """Run ``args`` in a new session (its own process group) until it exits or this process is
    asked to stop; the exit status to return."""
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)

    # Handlers, not SIG_IGN: the child starts with default handling even when this process was
    # started with SIGINT ignored (a background job).
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        proc = subprocess.Popen(args, env=env, cwd=cwd, start_new_session=True)
        while proc.poll() is None and not received:
            time.sleep(0.2)
        if not received:
            return proc.returncode
        name = signal.Signals(received[0]).name
        click.echo(f"\n{name} received: stopping Dagster (process group {proc.pid}) …", err=True)
        how = stop_group(proc, stop_seconds)
        click.echo(f"Dagster {how}.", err=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: str(stack.default_state_dir()),
    show_default="$FEEDLOT_STATE_DIR or .feedlot",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Dagster UI address.")
@click.option("--port", default=3000, show_default=True, type=int, help="Dagster UI port.")
@click.option(
    "--down",
    "stop_stack",
    is_flag=True,
    help="Stop the local stack too when Dagster stops (by default it stays up).",
)
@click.option(
    "--stop-seconds",
    default=DEFAULT_STOP_SECONDS,
    show_default=True,
    type=float,
    help="How long Dagster gets to stop before its processes are killed.",
)
@click.pass_context
def dev(
    ctx: click.Context,
    state_dir: Path,
    host: str,
    port: int,
    stop_stack: bool,
    stop_seconds: float,
) -> None:
    """Start the local stack (reusing what runs), then the Dagster UI with the sensors, until
    Ctrl-C or SIGTERM.

    In the background: `make dev > dev.log 2>&1 &` then `kill %1` (or `kill <pid>`) stops it
    within --stop-seconds; `make down` stops the stack.
    """
    ctx.invoke(local_up, state_dir=state_dir, accept_empty_lake=False)
    try:
        values = stack.env(state_dir)
    except ServiceError as err:
        raise click.ClickException(str(err)) from None
    home = Path(values["DAGSTER_HOME"])
    workspace = write_workspace(state_dir.resolve())
    env = {**os.environ, **values}
    click.echo(f"\nDagster UI on http://{host}:{port} (Ctrl-C or SIGTERM stops it)")
    # Started in DAGSTER_HOME: its dagster.yaml is the one in use (from the repository's
    # dagster.yaml), so `dagster dev` has no other one in its working directory to warn about.
    code = run_in_own_group(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            host,
            "-p",
            str(port),
            "-w",
            str(workspace),
        ],
        env,
        home,
        stop_seconds,
    )
    if stop_stack:
        for s in stack.down(state_dir):
            click.echo(f"  {s.name:<14}{s.state}", err=True)
        click.echo("The local stack is stopped.", err=True)
    else:
        click.echo(
            "The local stack stays up (lake, warehouse, emulators); `make down` or "
            "`feedlot local down` stops it.",
            err=True,
        )
    sys.exit(code)
