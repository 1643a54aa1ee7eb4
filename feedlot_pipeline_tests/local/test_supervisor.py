"""The one supervisor every local process goes through: reuse, restart, refuse, clean up.

``python -m http.server`` stands in for a service (no GET /health: an open port is enough).
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from feedlot_pipeline.local.services import LOOPBACK, ServiceError, free_port, port_open
from feedlot_pipeline.local.state import read_record, state_paths
from feedlot_pipeline.local.supervisor import (
    ServiceSpec,
    ensure_running,
    is_running,
    ours,
    stop,
)

MARKER = "http.server"


def spec(port: int, listen_on: int | None = None, **kwargs) -> ServiceSpec:  # noqa: ANN003
    args = ("--bind", LOOPBACK, str(listen_on or port))
    return ServiceSpec(
        "web", MARKER, args, port, "FEEDLOT_WEB_PORT", "web server", health=False, **kwargs
    )


def test_reuse_restart_and_stop(tmp_path: Path) -> None:
    paths = state_paths(tmp_path).prepare()
    port = free_port()
    first = ensure_running(paths, spec(port, env={"A": "1"}))
    try:
        assert first.state == "started" and port_open(port)
        record = read_record(paths.record("web"))
        assert record["pid"] == first.pid and record["port"] == port
        assert record["marker"] == MARKER and "A" not in str(record)  # a digest, not the env
        assert stat.S_IMODE(paths.record("web").stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.log("web").stat().st_mode) == 0o600

        again = ensure_running(paths, spec(port, env={"A": "1"}))
        assert (again.state, again.pid) == ("reused", first.pid)

        changed = ensure_running(paths, spec(port, env={"A": "2"}))  # another environment
        assert changed.state == "restarted" and changed.pid != first.pid
        assert not is_running(first.pid)

        other_port = free_port()
        moved = ensure_running(paths, spec(other_port, env={"A": "2"}))
        assert moved.state == "restarted" and not is_running(changed.pid)
        assert not port_open(port) and port_open(other_port)
    finally:
        stopped = stop(paths, "web", MARKER)
    assert stopped is not None and not is_running(stopped)
    assert not paths.record("web").exists()
    assert stop(paths, "web", MARKER) is None  # nothing left to stop


def test_a_port_taken_by_someone_else_is_refused(tmp_path: Path) -> None:
    paths = state_paths(tmp_path).prepare()
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} .*set FEEDLOT_WEB_PORT"):
            ensure_running(paths, spec(port))
    assert not paths.record("web").exists()


def test_a_service_that_never_listens_is_stopped_and_forgotten(tmp_path: Path) -> None:
    paths = state_paths(tmp_path).prepare()
    port, elsewhere = free_port(), free_port()
    with pytest.raises(ServiceError, match="did not listen"):
        ensure_running(paths, spec(port, listen_on=elsewhere, startup_seconds=1.5))
    assert not paths.record("web").exists()
    time.sleep(0.2)
    assert not port_open(elsewhere)  # the process that came up on the wrong port was stopped
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if MARKER in (p.info["cmdline"] or []) and str(elsewhere) in (p.info["cmdline"] or [])
    ]
    assert not [pid for pid in leftovers if is_running(pid)]


def test_only_our_own_processes_count_as_ours(tmp_path: Path) -> None:
    paths = state_paths(tmp_path).prepare()
    port = free_port()
    running = ensure_running(paths, spec(port))
    try:
        created = psutil.Process(running.pid).create_time()
        assert ours(running.pid, MARKER, created)
        assert not ours(running.pid, "moto.server")  # another service's marker
        # A record older than the process: the pid was given to a newer process since.
        assert not ours(running.pid, MARKER, created - 60)
    finally:
        stop(paths, "web", MARKER)
    assert not ours(running.pid, MARKER)  # gone
    # Alive, with the marker, but not leading its own process group: never ours to signal.
    child = subprocess.Popen(
        [sys.executable, "-m", MARKER, "--bind", LOOPBACK, str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert is_running(child.pid)
        assert not ours(child.pid, MARKER)
    finally:
        child.kill()  # this test's own child: no need to ask it nicely
        child.wait(10)
    assert not is_running(child.pid)
