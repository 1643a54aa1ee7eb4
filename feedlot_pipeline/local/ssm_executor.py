"""What the worker instance's SSM agent does with a command, locally: run it and remember it.

The agent polls ``ssm:ListCommands`` (moto) for commands addressed to its instance id (by id or by
a tag target moto resolved), and runs each ``AWS-RunShellScript`` command's ``commands`` with bash
in its own process group, in a folder standing in for the EBS data volume (exported to the command
as ``FEEDLOT_WORKER_WORKDIR``), with the stack's environment. It honours the document's
``executionTimeout`` (the process group is killed: ``TimedOut``) and cancels on request, and it
remembers every command it saw in ``<state>/ssm_agent/<instance>/state.json`` (mode 0600, in a
0700 folder: outputs may hold records), so a restart never runs one twice.

The answers SSM gives about those commands (``GetCommandInvocation``, ``ListCommandInvocations``)
are built here from what actually ran; ``ssm_endpoint.py`` serves them over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feedlot_pipeline.local.ssm_instance import WORKER_NAME
from feedlot_pipeline.local.state import private_dir, private_file, write_private
from feedlot_pipeline.local.supervisor import ours

SUPPORTED_DOCUMENTS = ("AWS-RunShellScript",)
DEFAULT_EXECUTION_TIMEOUT = 3600  # AWS-RunShellScript's default
STDOUT_LIMIT = 24000  # GetCommandInvocation returns the first 24,000 characters of stdout
STDERR_LIMIT = 8000  # and the first 8,000 of stderr
KILL_GRACE_SECONDS = 3.0
TERMINAL = ("Success", "Failed", "Cancelled", "TimedOut")
STATUS_DETAILS = {
    "Pending": "Pending",
    "InProgress": "In Progress",
    "Cancelling": "Cancelling",
    "Success": "Success",
    "Failed": "Failed",
    "Cancelled": "Cancelled",
    "TimedOut": "Execution Timed Out",
}

log = logging.getLogger("feedlot.ssm_agent")


@dataclass
class CommandRecord:
    """What this instance did with one command; persisted in state.json."""

    command_id: str
    document_name: str
    comment: str
    requested_at: float
    execution_timeout: int
    status: str = "Pending"
    details: str = "Pending"
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    response_code: int = -1
    cancel_requested: bool = False
    stop_reason: str | None = None  # cancel | timeout

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _elapsed(record: CommandRecord) -> str:
    if record.started_at is None:
        return ""
    end = record.ended_at or time.time()
    return f"PT{end - record.started_at:.3f}S"


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return time.time()


# --- the agent -----------------------------------------------------------------------------------


class SSMAgent:
    """Polls for its instance's commands, runs them, and answers the SSM calls moto cannot."""

    def __init__(
        self,
        instance_id: str,
        state_dir: Path,
        workdir: Path,
        poll_seconds: float = 1.0,
        command_env: dict[str, str] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.root = Path(state_dir) / "ssm_agent" / instance_id
        self.workdir = Path(workdir)
        self.poll_seconds = poll_seconds
        self.command_env = dict(command_env if command_env is not None else os.environ)
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._term_sent: dict[str, float] = {}
        self._stop = threading.Event()
        self.records: dict[str, CommandRecord] = {}
        self.since = time.time()
        self._load()

    # state ------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def command_dir(self, command_id: str) -> Path:
        return self.root / "commands" / command_id

    def _load(self) -> None:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            self._save()
            return
        self.since = float(data.get("since", self.since))
        for raw in data.get("commands", []):
            record = CommandRecord(**raw)
            if record.status in ("InProgress", "Cancelling"):
                # An earlier agent died with this command running: its exit code is lost.
                if ours(record.pid, record.command_id, record.started_at):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(record.pid, signal.SIGKILL)
                record.status, record.details = "Failed", "Failed (agent restarted)"
                record.ended_at = time.time()
            self.records[record.command_id] = record

    def _save(self) -> None:
        with self._lock:
            data = {
                "instance_id": self.instance_id,
                "since": self.since,
                "commands": [asdict(r) for r in self.records.values()],
            }
        private_dir(self.root.parent)
        private_dir(self.root)
        write_private(self.state_file, json.dumps(data, indent=1))

    # polling and running ----------------------------------------------------------------------

    def poll_once(self) -> None:
        """One round: pick up new commands, reap finished ones, enforce timeouts and cancels."""
        from feedlot_pipeline.core.aws import client

        commands = client("ssm").list_commands(InstanceId=self.instance_id).get("Commands", [])
        changed = False
        with self._lock:
            for command in commands:
                if command["CommandId"] not in self.records:
                    self._accept(command)
                    changed = True
        changed |= self._supervise()
        if changed:
            self._save()

    def _accept(self, command: dict) -> None:
        params = command.get("Parameters") or {}
        try:
            timeout = int((params.get("executionTimeout") or [DEFAULT_EXECUTION_TIMEOUT])[0])
        except (TypeError, ValueError):
            timeout = DEFAULT_EXECUTION_TIMEOUT
        record = CommandRecord(
            command_id=command["CommandId"],
            document_name=command.get("DocumentName") or "",
            comment=command.get("Comment") or "",
            requested_at=_epoch(command.get("RequestedDateTime")),
            execution_timeout=timeout,
        )
        with self._lock:
            self.records[record.command_id] = record
            if record.requested_at < self.since - 1:
                # Sent before this agent's state began (another agent, a wiped state dir).
                record.status, record.details = "Failed", "Undeliverable"
                return
            if record.document_name not in SUPPORTED_DOCUMENTS:
                record.status = "Failed"
                record.details = f"Failed (document {record.document_name} not supported locally)"
                return
            self._start(record, params.get("commands") or [])

    def _start(self, record: CommandRecord, commands: list[str]) -> None:
        folder = private_dir(self.command_dir(record.command_id))
        script = folder / "script.sh"  # its path (with the command id) marks the process as ours
        write_private(script, "\n".join(commands) + "\n")
        private_dir(self.workdir)
        bin_dir = str(Path(sys.executable).parent)  # where the feedlot console script is
        env = {
            **self.command_env,
            "FEEDLOT_WORKER_WORKDIR": str(self.workdir),
            "PATH": f"{bin_dir}{os.pathsep}{self.command_env.get('PATH', os.defpath)}",
        }
        stdout, stderr = private_file(folder / "stdout"), private_file(folder / "stderr")
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.workdir,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self._procs[record.command_id] = proc
        record.pid, record.started_at = proc.pid, time.time()
        record.status, record.details = "InProgress", STATUS_DETAILS["InProgress"]
        log.info("command %s started (pid %s)", record.command_id, proc.pid)

    def _supervise(self) -> bool:
        changed = False
        now = time.time()
        with self._lock:
            for command_id, proc in list(self._procs.items()):
                record = self.records[command_id]
                code = proc.poll()
                if code is not None:
                    self._finish(record, code)
                    del self._procs[command_id]
                    changed = True
                    continue
                if record.stop_reason is None:
                    if record.cancel_requested:
                        record.stop_reason = "cancel"
                        record.status, record.details = "Cancelling", STATUS_DETAILS["Cancelling"]
                    elif record.started_at and now - record.started_at > record.execution_timeout:
                        record.stop_reason = "timeout"
                    if record.stop_reason:
                        self._term_sent[command_id] = now
                        self._kill(record, signal.SIGTERM)
                        changed = True
                sent = self._term_sent.get(command_id)
                if sent is not None and now - sent > KILL_GRACE_SECONDS:
                    self._kill(record, signal.SIGKILL)
        return changed

    @staticmethod
    def _kill(record: CommandRecord, sig: int) -> None:
        if record.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, sig)

    def _finish(self, record: CommandRecord, code: int) -> None:
        record.ended_at = time.time()
        record.response_code = code
        self._term_sent.pop(record.command_id, None)
        if record.stop_reason:
            self._kill(record, signal.SIGKILL)  # nothing of a stopped command may outlive it
            status = "TimedOut" if record.stop_reason == "timeout" else "Cancelled"
        else:
            status = "Success" if code == 0 else "Failed"
        record.status, record.details = status, STATUS_DETAILS[status]
        log.info("command %s ended %s (exit %s)", record.command_id, record.status, code)

    def cancel(self, command_id: str, document_name: str = "", comment: str = "") -> None:
        """Stop a command; one not picked up yet is recorded Cancelled and never starts."""
        with self._lock:
            record = self.records.get(command_id)
            if record is None:
                record = CommandRecord(
                    command_id=command_id,
                    document_name=document_name,
                    comment=comment,
                    requested_at=time.time(),
                    execution_timeout=DEFAULT_EXECUTION_TIMEOUT,
                    status="Cancelled",
                    details=STATUS_DETAILS["Cancelled"],
                )
                self.records[command_id] = record
            elif not record.terminal:
                record.cancel_requested = True
                self._supervise()
        self._save()

    def run(self) -> None:
        """Poll until stop(); an error in a round is logged and the next round retries."""
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - moto restarting, a transient error: keep serving
                log.exception("poll failed")
            self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        """Stop polling and every command still running (nothing outlives the agent)."""
        self._stop.set()
        with self._lock:
            for command_id in list(self._procs):
                record = self.records[command_id]
                self._kill(record, signal.SIGTERM)
            deadline = time.monotonic() + KILL_GRACE_SECONDS
            for command_id, proc in list(self._procs.items()):
                record = self.records[command_id]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))
                self._kill(record, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)
                record.status, record.details = "Failed", "Failed (agent stopped)"
                record.ended_at = time.time()
                record.response_code = proc.returncode if proc.returncode is not None else -1
            self._procs.clear()
        self._save()

    # SSM API answers ---------------------------------------------------------------------------

    def _output(self, command_id: str, name: str, limit: int) -> str:
        try:
            with open(self.command_dir(command_id) / name, "rb") as f:
                return f.read(limit).decode(errors="replace")
        except OSError:
            return ""

    def invocation(self, record: CommandRecord, details: bool = False) -> dict[str, Any]:
        """A ListCommandInvocations item."""
        item: dict[str, Any] = {
            "CommandId": record.command_id,
            "InstanceId": self.instance_id,
            "InstanceName": WORKER_NAME,
            "Comment": record.comment,
            "DocumentName": record.document_name,
            "DocumentVersion": "$DEFAULT",
            "RequestedDateTime": record.requested_at,
            "Status": record.status,
            "StatusDetails": record.details,
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
        }
        if details:
            item["CommandPlugins"] = [
                {
                    "Name": "aws:runShellScript",
                    "Status": record.status,
                    "StatusDetails": record.details,
                    "ResponseCode": record.response_code,
                    "Output": self._output(record.command_id, "stdout", 2500),
                }
            ]
        return item

    def command_invocation(self, record: CommandRecord) -> dict[str, Any]:
        """A GetCommandInvocation answer."""
        return {
            "CommandId": record.command_id,
            "InstanceId": self.instance_id,
            "Comment": record.comment,
            "DocumentName": record.document_name,
            "DocumentVersion": "$DEFAULT",
            "PluginName": "aws:runShellScript",
            "ResponseCode": record.response_code,
            "ExecutionStartDateTime": _iso(record.started_at),
            "ExecutionElapsedTime": _elapsed(record),
            "ExecutionEndDateTime": _iso(record.ended_at),
            "Status": record.status,
            "StatusDetails": record.details,
            "StandardOutputContent": self._output(record.command_id, "stdout", STDOUT_LIMIT),
            "StandardOutputUrl": "",
            "StandardErrorContent": self._output(record.command_id, "stderr", STDERR_LIMIT),
            "StandardErrorUrl": "",
            "CloudWatchOutputConfig": {
                "CloudWatchLogGroupName": "",
                "CloudWatchOutputEnabled": False,
            },
        }

    def newest_first(self) -> list[CommandRecord]:
        with self._lock:
            return sorted(self.records.values(), key=lambda r: -r.requested_at)

    def health(self) -> dict[str, Any]:
        with self._lock:
            statuses = [r.status for r in self.records.values()]
        return {
            "pid": os.getpid(),
            "instance_id": self.instance_id,
            "workdir": str(self.workdir),
            "commands": len(statuses),
            "running": sum(s in ("InProgress", "Cancelling") for s in statuses),
            "failed": sum(s in ("Failed", "TimedOut") for s in statuses),
        }


def pending(command_id: str) -> CommandRecord:
    """A command this agent has not picked up (yet): what SSM says of it."""
    return CommandRecord(
        command_id=command_id,
        document_name="",
        comment="",
        requested_at=time.time(),
        execution_timeout=DEFAULT_EXECUTION_TIMEOUT,
    )
