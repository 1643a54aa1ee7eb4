"""`feedlot dev` (what `make dev` runs) stops on SIGTERM and on Ctrl-C's SIGINT, also when it was
started the way a shell starts a background job (SIGINT ignored), and leaves no Dagster process.

Real processes: a stack of the test's own on free ports, `dagster dev` with its webserver, daemon
and code server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from feedlot_pipeline.local.services import free_port, port_open
from feedlot_pipeline.tools.dev import group_alive
from feedlot_pipeline_tests.helpers import own_stack_env, wait_for

DAGSTER_DEV = ["-m", "dagster", "dev"]
STOP_WITHIN_SECONDS = 45  # --stop-seconds 30, then SIGKILL, plus slack for a loaded machine


def feedlot(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("feedlot")), *args]


@pytest.fixture(scope="module")
def dev_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One stack for the module: the second `feedlot dev` reuses it, as `make dev` after
    `make dev` does."""
    env = own_stack_env(tmp_path_factory.mktemp("dev") / "state")
    yield env
    subprocess.run(feedlot("local", "down"), env=env, capture_output=True, timeout=120)


def _background_job() -> None:
    """What a non-interactive shell does to a job started with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _alive(pids: set[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_dev_stops_on_signal_and_leaves_no_dagster_process(
    dev_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    ui_port = free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            feedlot("dev", "--port", str(ui_port), "--stop-seconds", "30"),
            env=dev_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_background_job,  # noqa: PLW1509 - the state of a shell's background job
        )
    try:
        wait_for(lambda: port_open(ui_port) or proc.poll() is not None, 300, "the Dagster UI")
        assert proc.poll() is None, log.read_text()
        (dagster,) = [
            c for c in psutil.Process(proc.pid).children() if c.cmdline()[1:4] == DAGSTER_DEV
        ]
        family = {p.pid for p in group_alive(dagster.pid)}  # webserver, daemon, code server
        names = " ".join(" ".join(psutil.Process(p).cmdline()) for p in _alive(family))
        assert "dagster_webserver" in names and "dagster._daemon" in names, names
        started = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(STOP_WITHIN_SECONDS)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 0, output
    assert elapsed < STOP_WITHIN_SECONDS
    assert f"{sig.name} received" in output
    assert "Dagster stopped." in output, output  # not "killed after …"
    assert "The local stack stays up" in output
    assert "Dagster services shut down." in output  # dagster dev's own orderly shutdown
    assert _alive(family) == []
    assert group_alive(dagster.pid) == []  # nor anything started in that group meanwhile
    assert not port_open(ui_port)
    status = subprocess.run(feedlot("local", "status"), env=dev_env, capture_output=True)
    assert status.returncode == 0, status.stdout  # the stack is still up, as announced
