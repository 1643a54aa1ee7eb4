"""One supervisor for the local stack's processes: reuse a healthy one, else (re)start it.

Every process the stack starts (moto, the Lambda bridge, the API gateway, the SSM agent) goes
through :func:`ensure_running`: it runs ``python -m <module> …`` in a session of its own, logs to
``logs/<name>.log`` and records it in ``run/<name>.json`` (pid, port, start time, a digest of its
environment) *before* waiting for it, so ``down`` finds it even when ``up`` dies half-way.

A recorded pid counts as ours only when, according to ``psutil``, that process is alive (not a
zombie), leads its own process group, was created no later than the record says, and its command
line carries the service's marker; a recycled pid or a stranger is never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from feedlot_pipeline.local.services import LOOPBACK, ServiceError, port_open, wait_for_port
from feedlot_pipeline.local.state import StatePaths, open_private_log, read_record, write_record

START_TIME_SLACK_SECONDS = 2.0  # a record's started_at is taken just after the process started


@dataclass(frozen=True)
class ServiceInfo:
    """One part of the stack: where it listens and whether it is alive."""

    name: str
    address: str
    pid: int | None
    alive: bool
    # started | restarted | reused | external | running | down | stopped | not running
    state: str
    log: Path | None = None
    detail: str = ""


# --- process checks ------------------------------------------------------------------------------


def is_running(pid: int | None) -> bool:
    """Alive and not a zombie (an exited child waits for its parent; it does not run)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def ours(pid: int | None, marker: str, started_at: float | None = None) -> bool:
    """Is ``pid`` a process we started: alive, its own group's leader, marker in its command line?

    ``started_at`` (the record's time) rules out a pid the system gave to a newer process.
    """
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_at is not None and process.create_time() > started_at + START_TIME_SLACK_SECONDS:
            return False
        command = " ".join(process.cmdline())
        group = os.getpgid(pid)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return False  # gone, or not ours to inspect: never signal it
    return group == pid and marker in command


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group (it was started in its own session), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process is the parent (tests, demo)
        if not is_running(pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the leader is gone or stuck: no member may outlive it
    deadline = time.monotonic() + 5.0  # a SIGKILLed process still takes a moment to go
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not is_running(pid) or time.monotonic() > deadline:
            break
        time.sleep(0.05)


def dagster_processes(dagster_home: Path) -> list[int]:
    """Pids of Dagster processes (``dagster dev``, its daemon, webserver, code servers, run
    workers) whose DAGSTER_HOME is ``dagster_home``, this process and its ancestors excepted.

    A ``feedlot dev`` that was SIGKILLed leaves its code servers (``dagster code-server start``
    and their ``dagster api grpc``) running: they live outside its process group and outlive
    their heartbeat timeout. Only the environment tells which stack they belong to.
    """
    home = str(dagster_home)
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] in spared or not any("dagster" in part for part in cmdline):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("DAGSTER_HOME") == home:
                found.append(proc.info["pid"])
    return found


def stop_processes(pids: list[int], timeout: float = 5.0) -> list[int]:
    """SIGTERM each process, SIGKILL what is left after ``timeout`` (a ``dagster api grpc``
    child ignores SIGTERM once its parent is gone); the pids that were running."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5.0)
    return [p.pid for p in procs]


def released(port: int, timeout: float = 3.0) -> bool:
    """Whether ``port`` closes within ``timeout``. A killed multi-threaded process shows as a
    zombie (not running) while its other threads still exit, and its sockets close only after
    the last one: a process we recorded on a port may hold it a moment after it "died"."""
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def service_health(port: int, timeout: float = 1.0) -> dict | None:
    """The JSON of a local service's GET /health (bridge, API gateway, SSM agent), or None."""
    import requests

    try:
        response = requests.get(f"http://{LOOPBACK}:{port}/health", timeout=timeout)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


def env_digest(child_env: Mapping[str, str]) -> str:
    """What a service record keeps of its environment: a digest (the env holds secrets)."""
    return hashlib.sha256(json.dumps(dict(child_env), sort_keys=True).encode()).hexdigest()


def port_taken(port: int, variable: str, what: str) -> ServiceError:
    return ServiceError(
        f"port {port} (for the {what}) is already in use by another program; "
        f"stop it or set {variable} to a free port"
    )


# --- the supervisor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and how to tell that a running one is still the right one."""

    name: str  # run/<name>.json, logs/<name>.log
    marker: str  # the module: ``python -m <marker> …``, found in its command line
    args: tuple[str, ...]  # after the module
    port: int
    port_variable: str  # named in the error when the port is taken
    what: str  # for people: "Lambda bridge"
    env: Mapping[str, str] | None = None  # added to the child's environment; a change restarts
    extra: Mapping[str, Any] = field(default_factory=dict)  # recorded; a change restarts
    health: bool = True  # serves GET /health with its pid; else an open port is enough
    accept: Callable[[dict], bool] | None = None  # a further check of the health answer
    startup_seconds: float = 30.0

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class Running:
    pid: int
    state: str  # reused | started | restarted
    health: dict  # its last GET /health ({} for a service without one)


def _healthy(spec: ServiceSpec, pid: int) -> dict | None:
    if not spec.health:
        return {} if port_open(spec.port) else None
    answer = service_health(spec.port)
    if not answer or answer.get("pid") != pid:
        return None
    if spec.accept is not None and not spec.accept(answer):
        return None
    return answer


def _same(spec: ServiceSpec, record: dict) -> bool:
    if record.get("port") != spec.port:
        return False
    if spec.env is not None and record.get("env_sha256") != env_digest(spec.env):
        return False
    return all(record.get(key) == value for key, value in spec.extra.items())


def recorded_pid(paths: StatePaths, name: str, marker: str) -> int | None:
    """The pid of ``run/<name>.json`` when that process is ours and alive, else None."""
    record = read_record(paths.record(name)) or {}
    pid = record.get("pid")
    return pid if ours(pid, record.get("marker") or marker, record.get("started_at")) else None


def ensure_running(paths: StatePaths, spec: ServiceSpec) -> Running:
    """Reuse the recorded process when it is ours, configured the same and healthy; else stop it
    (if it is ours) and start a new one. Raises ServiceError when the port is someone else's or
    the new process does not come up (it is then stopped and its record removed).
    """
    record = read_record(paths.record(spec.name)) or {}
    pid = record.get("pid")
    state = "started"
    # The recorded marker: a process started as another module (an older version of the
    # service) is still ours to stop and replace.
    marker = record.get("marker") or spec.marker
    if ours(pid, marker, record.get("started_at")):
        if marker == spec.marker and _same(spec, record):
            health = _healthy(spec, pid)
            if health is not None:
                return Running(pid, "reused", health)
        stop_group(pid)  # stale: another port, environment or moto, or not answering
        state = "restarted"
    paths.record(spec.name).unlink(missing_ok=True)
    if port_open(spec.port) and not (record.get("port") == spec.port and released(spec.port)):
        raise port_taken(spec.port, spec.port_variable, spec.what)
    proc = _spawn(paths, spec)
    try:
        wait_for_port(spec.port, spec.startup_seconds, proc, spec.what)
        health = _wait_healthy(spec, proc) if spec.health else {}
    except ServiceError as err:
        stop_group(proc.pid)  # our child, not reaped yet: its pid cannot have been reused
        paths.record(spec.name).unlink(missing_ok=True)
        raise ServiceError(f"{err}{_log_tail(paths.log(spec.name))}") from None
    except BaseException:
        stop_group(proc.pid)
        paths.record(spec.name).unlink(missing_ok=True)
        raise
    return Running(proc.pid, state, health)


def _log_tail(log: Path) -> str:
    """The last line a failed service wrote (its reason, usually), and where its log is."""
    try:
        with open(log, "rb") as src:
            src.seek(max(0, log.stat().st_size - 2000))
            lines = [x for x in src.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return f"; it said: {lines[-1].strip()} (log {log})" if lines else f" (log {log})"


def _spawn(paths: StatePaths, spec: ServiceSpec) -> subprocess.Popen:
    log = paths.log(spec.name)
    with open_private_log(log) as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", spec.marker, *spec.args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(spec.env or {}), "PYTHONUNBUFFERED": "1"},
        )
    record: dict[str, Any] = {
        "pid": proc.pid,
        "port": spec.port,
        "marker": spec.marker,
        "log": str(log),
        "started_at": time.time(),
    }
    if spec.env is not None:
        record["env_sha256"] = env_digest(spec.env)
    write_record(paths.record(spec.name), {**record, **spec.extra})
    return proc


def _wait_healthy(spec: ServiceSpec, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + spec.startup_seconds
    while time.monotonic() < deadline:
        answer = service_health(spec.port, timeout=2)
        if answer and answer.get("pid") == proc.pid:
            return answer
        if proc.poll() is not None:
            raise ServiceError(f"{spec.what} exited with code {proc.returncode}")
        time.sleep(0.1)
    raise ServiceError(f"{spec.what} on port {spec.port} answers no GET /health with its pid")


def stop(paths: StatePaths, name: str, marker: str, timeout: float = 15.0) -> int | None:
    """Stop the recorded process if it is ours; remove its record. Returns the pid it stopped."""
    pid = recorded_pid(paths, name, marker)
    if pid is not None:
        stop_group(pid, timeout)
    paths.record(name).unlink(missing_ok=True)
    return pid


def probe(paths: StatePaths, name: str, marker: str, health: bool = True) -> tuple[dict, dict]:
    """A recorded service's record and its health ({} when it is down), for ``status``."""
    record = read_record(paths.record(name))
    if record is None:
        return {}, {}
    pid = recorded_pid(paths, name, marker)
    port = int(record.get("port") or 0)
    if pid is None or not port:
        return record, {}
    if not health:
        return record, {"pid": pid} if port_open(port) else {}
    answer = service_health(port)
    return record, answer if answer and answer.get("pid") == pid else {}
