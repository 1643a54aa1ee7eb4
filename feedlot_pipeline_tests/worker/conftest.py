"""A worker instance registered in the session's moto server, with the real local SSM agent.

The agent runs as its own process (as ``feedlot local up`` starts it) and serves the stack's SSM
endpoint; ``ssm_worker`` points this process's SSM clients at it for one test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from feedlot_pipeline.local.services import free_port, wait_for_port

PIPES_WORKER = Path(__file__).with_name("pipes_worker.py")
AGENT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class WorkerStack:
    instance_id: str
    volume_id: str
    tag_key: str
    tag_value: str
    endpoint: str
    state_dir: Path
    workdir: Path
    log: Path
    pid: int

    def health(self) -> dict:
        return requests.get(f"{self.endpoint}/health", timeout=5).json()

    def worker_command(self) -> str:
        return f"{sys.executable} {PIPES_WORKER}"


def start_agent(instance_id: str, state_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_SSM"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feedlot_pipeline.local.ssm_agent",
                "--instance-id",
                instance_id,
                "--state-dir",
                str(state_dir),
                "--port",
                str(port),
                "--poll-seconds",
                str(AGENT_POLL_SECONDS),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    wait_for_port(port, 30, proc, "SSM agent")
    return proc


def stop_agent(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="session")
def worker_stack(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerStack]:
    from feedlot_pipeline.local.ssm_agent import register_worker_instance

    tag_value = f"feedlot-worker-{uuid.uuid4().hex[:8]}"
    worker = register_worker_instance("Role", tag_value, "Backup", "true")
    state_dir = tmp_path_factory.mktemp("ssm_state")
    log = state_dir / "ssm_agent.log"
    port = free_port()
    proc = start_agent(worker.instance_id, state_dir, port, log)
    stack = WorkerStack(
        instance_id=worker.instance_id,
        volume_id=worker.volume_id,
        tag_key="Role",
        tag_value=tag_value,
        endpoint=f"http://127.0.0.1:{port}",
        state_dir=state_dir,
        workdir=state_dir / "ebs",
        log=log,
        pid=proc.pid,
    )
    yield stack
    stop_agent(proc)


@pytest.fixture()
def ssm_worker(worker_stack: WorkerStack, monkeypatch: pytest.MonkeyPatch) -> WorkerStack:
    """The worker stack, with this process's SSM calls going through the agent's endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", worker_stack.endpoint)
    return worker_stack


def alive(pid: int) -> bool:
    """Running (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def put_spec(bucket: str, key: str, spec: dict) -> str:
    from feedlot_pipeline.aws import client

    client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(spec).encode())
    return f"s3://{bucket}/{key}"
