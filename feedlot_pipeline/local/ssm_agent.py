"""Local stand-in for the worker instance's SSM agent (moto records Run Command, never runs it).

What it does, as the real agent does for its instance:

- polls ``ssm:ListCommands`` (moto) for commands addressed to its instance id (by id or by a tag
  target moto resolved), and runs each ``AWS-RunShellScript`` command's ``commands`` with bash in
  its own process group, in a folder standing in for the EBS data volume (exported to the command
  as ``FEEDLOT_WORKER_WORKDIR``), with the stack's environment;
- honours the document's ``executionTimeout`` (the process group is killed: ``TimedOut``);
- remembers every command it saw in ``<state>/ssm_agent/<instance>/state.json``, so a restart
  never runs one twice.

moto 5.2 implements neither ``CancelCommand`` nor ``ListCommandInvocations`` (HTTP 500), and its
``GetCommandInvocation`` says ``Success`` the moment a command is sent, so neither the cancel nor
the real status can travel through moto. The agent therefore also serves the SSM API endpoint of
the local stack (``AWS_ENDPOINT_URL_SSM``): it answers those three calls for its instance from
what it actually ran (Pending → InProgress → Success | Failed | TimedOut | Cancelled, exit code,
stdout/stderr) and forwards every other SSM request to moto unchanged. The dispatch code makes the
same calls it makes against AWS; a ``CancelCommand`` reaches the agent like the real service's
cancel reaches the real agent, and the agent kills the process group.

Run: ``python -m feedlot_pipeline.local.ssm_agent --instance-id i-… --port 9020 --state-dir
.feedlot`` (``feedlot local up`` does). ``GET /health`` reports counts as JSON.
"""

from __future__ import annotations

import argparse
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
AGENT_MARKER = "feedlot_pipeline.local.ssm_agent"
SUPPORTED_DOCUMENTS = ("AWS-RunShellScript",)
DEFAULT_EXECUTION_TIMEOUT = 3600  # AWS-RunShellScript's default
STDOUT_LIMIT = 24000  # GetCommandInvocation returns the first 24,000 characters of stdout
STDERR_LIMIT = 8000  # and the first 8,000 of stderr
KILL_GRACE_SECONDS = 3.0
WORKER_NAME = "feedlot-worker"
WORKER_DATA_ROLE = "worker-data"
ROLE_TAG = "feedlot:role"
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


# --- the worker instance in moto -----------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInstance:
    instance_id: str
    volume_id: str
    created: bool


def register_worker_instance(
    tag_key: str, tag_value: str, backup_tag_key: str, backup_tag_value: str
) -> WorkerInstance:
    """The worker EC2 instance (tagged for SSM targeting) with a data volume tagged for backup.

    Idempotent: an instance already carrying the worker tag (running) is reused, and so is its
    attached data volume.
    """
    from feedlot_pipeline.core.aws import client

    ec2 = client("ec2")
    found = [
        instance
        for reservation in ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{tag_key}", "Values": [tag_value]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        for instance in reservation["Instances"]
    ]
    created = not found
    if found:
        instance = found[0]
    else:
        tags = {"Name": WORKER_NAME, tag_key: tag_value}
        instance = ec2.run_instances(
            ImageId=_an_image(ec2),
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.large",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["Instances"][0]
    instance_id = instance["InstanceId"]
    volumes = ec2.describe_volumes(
        Filters=[
            {"Name": f"tag:{ROLE_TAG}", "Values": [WORKER_DATA_ROLE]},
            {"Name": "attachment.instance-id", "Values": [instance_id]},
        ]
    )["Volumes"]
    if volumes:
        volume_id = volumes[0]["VolumeId"]
    else:
        tags = {
            "Name": f"{WORKER_NAME}-data",
            ROLE_TAG: WORKER_DATA_ROLE,
            backup_tag_key: backup_tag_value,
        }
        volume_id = ec2.create_volume(
            AvailabilityZone=instance["Placement"]["AvailabilityZone"],
            Size=100,
            VolumeType="gp3",
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["VolumeId"]
        ec2.attach_volume(Device="/dev/sdf", InstanceId=instance_id, VolumeId=volume_id)
    return WorkerInstance(instance_id, volume_id, created)


def _an_image(ec2: Any) -> str:
    """An AMI id moto knows (its bundled Amazon images)."""
    images = ec2.describe_images(Owners=["amazon"]).get("Images", [])
    return images[0]["ImageId"] if images else "ami-12c6146b"


# --- command records -----------------------------------------------------------------------------


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
            self.root.mkdir(parents=True, exist_ok=True)
            self._save()
            return
        self.since = float(data.get("since", self.since))
        for raw in data.get("commands", []):
            record = CommandRecord(**raw)
            if record.status in ("InProgress", "Cancelling"):
                # An earlier agent died with this command running: its exit code is lost.
                if record.pid:
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
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

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
        folder = self.command_dir(record.command_id)
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "script.sh"
        script.write_text("\n".join(commands) + "\n")
        self.workdir.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)  # where the feedlot console script is
        env = {
            **self.command_env,
            "FEEDLOT_WORKER_WORKDIR": str(self.workdir),
            "PATH": f"{bin_dir}{os.pathsep}{self.command_env.get('PATH', os.defpath)}",
        }
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
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


# --- the SSM endpoint ----------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SSMEndpoint:
    """HTTP front for SSM: three calls answered by the agent, the rest forwarded to moto."""

    OWN = ("CancelCommand", "GetCommandInvocation", "ListCommandInvocations")

    def __init__(self, agent: SSMAgent, upstream: str, host: str = LOOPBACK, port: int = 0):
        self.agent = agent
        self.upstream = upstream.rstrip("/")
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ssm-endpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # the three calls ---------------------------------------------------------------------------

    def _moto_command(self, command_id: str) -> dict[str, Any] | None:
        """The command as moto recorded it, None when moto does not know it."""
        from botocore.exceptions import ClientError

        from feedlot_pipeline.core.aws import client

        try:
            commands = client("ssm").list_commands(CommandId=command_id)["Commands"]
        except ClientError:
            return None
        return commands[0] if commands else None

    def _addressed_here(self, command_id: str) -> bool | None:
        """Is the command addressed to this instance? None when moto does not know it."""
        command = self._moto_command(command_id)
        if command is None:
            return None
        return self.agent.instance_id in command.get("InstanceIds", [])

    def _other_instances(self, command_id: str) -> list[str]:
        command = self._moto_command(command_id) or {}
        return [i for i in command.get("InstanceIds", []) if i != self.agent.instance_id]

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to an SSM call, or None to forward it to moto."""
        agent = self.agent
        command_id = params.get("CommandId", "")
        record = agent.records.get(command_id) if command_id else None
        if operation == "CancelCommand":
            if record is None:
                command = self._moto_command(command_id)
                if command is None:
                    raise _ApiError("InvalidCommandId", f"Invalid command id {command_id}")
                if agent.instance_id not in command.get("InstanceIds", []):
                    return {}  # addressed to instances no agent runs: nothing to stop
                agent.cancel(
                    command_id, command.get("DocumentName", ""), command.get("Comment", "")
                )
            else:
                agent.cancel(command_id)
            return {}
        if operation == "GetCommandInvocation":
            if params.get("InstanceId") != agent.instance_id:
                return None
            if record is None:
                if not self._addressed_here(command_id):
                    raise _ApiError("InvocationDoesNotExist", "invocation does not exist")
                record = _pending(command_id)
            return agent.command_invocation(record)
        if operation == "ListCommandInvocations":
            details = bool(params.get("Details"))
            if params.get("InstanceId") not in (None, agent.instance_id):
                return None
            if command_id:
                addressed = record is not None or self._addressed_here(command_id)
                if addressed is None:
                    raise _ApiError("InvalidCommandId", f"Invalid command id {command_id}")
                items = []
                if record is not None or addressed:
                    items.append(agent.invocation(record or _pending(command_id), details))
                # Instances without an agent never run anything: Pending, as for an offline one.
                for other in self._other_instances(command_id):
                    pending = agent.invocation(_pending(command_id), details)
                    items.append({**pending, "InstanceId": other, "InstanceName": ""})
                return {"CommandInvocations": items}
            with agent._lock:
                records = sorted(agent.records.values(), key=lambda r: -r.requested_at)
            return {"CommandInvocations": [agent.invocation(r, details) for r in records]}
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("http: " + format, *args)

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    body = json.dumps(endpoint.agent.health()).encode()
                    self._reply(HTTPStatus.OK, body, "application/json")
                else:
                    self._forward(b"")

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1]
                if operation in SSMEndpoint.OWN:
                    try:
                        answer = endpoint.call(operation, json.loads(body or b"{}"))
                    except _ApiError as err:
                        error = {"__type": err.code, "message": str(err)}
                        self._reply(400, json.dumps(error).encode(), "application/x-amz-json-1.1")
                        return
                    except Exception as err:  # noqa: BLE001 - answer like a service error
                        log.exception("%s failed", operation)
                        error = {"__type": "InternalServerError", "message": str(err)}
                        self._reply(500, json.dumps(error).encode(), "application/x-amz-json-1.1")
                        return
                    if answer is not None:
                        self._reply(
                            HTTPStatus.OK, json.dumps(answer).encode(), "application/x-amz-json-1.1"
                        )
                        return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                import requests

                skip = {"host", "content-length", "connection", "accept-encoding"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                try:
                    response = requests.request(
                        self.command,
                        endpoint.upstream + self.path,
                        data=body,
                        headers=headers,
                        timeout=60,
                    )
                except requests.RequestException as err:
                    self._reply(502, str(err).encode(), "text/plain")
                    return
                self._reply(
                    response.status_code,
                    response.content,
                    response.headers.get("Content-Type", "application/x-amz-json-1.1"),
                )

        return Handler


def _pending(command_id: str) -> CommandRecord:
    return CommandRecord(
        command_id=command_id,
        document_name="",
        comment="",
        requested_at=time.time(),
        execution_timeout=DEFAULT_EXECUTION_TIMEOUT,
    )


# --- as a service of the local stack (stack.py calls these) -------------------------------------


def start_worker(paths: Any, port: int, child_env: dict[str, str]) -> tuple[Any, str]:
    """Register the worker instance in moto and start (or reuse) its agent.

    Returns the agent's ServiceInfo and the SSM endpoint URL to export as AWS_ENDPOINT_URL_SSM.
    Runs with this process's environment pointed at the stack (inside stack.up's ``environ``).
    """
    from feedlot_pipeline.core.settings import BackupSettings, WorkerSettings
    from feedlot_pipeline.local import stack

    backup, ws = BackupSettings(), WorkerSettings()
    worker = register_worker_instance(
        ws.worker_tag_key, ws.worker_tag_value, backup.backup_tag_key, backup.backup_tag_value
    )
    log_path = paths.logs / "ssm_agent.log"
    address = f"http://{LOOPBACK}:{port}"
    detail = f"instance {worker.instance_id}, volume {worker.volume_id}"
    record = stack._read_record(paths.record("ssm_agent")) or {}
    env_digest = stack.env_digest(child_env)
    state = "started"
    if record.get("port") == port and stack._ours(record.get("pid"), AGENT_MARKER):
        health = stack.service_health(port)
        if (
            health
            and health.get("pid") == record["pid"]
            and record.get("env_sha256") == env_digest
            and record.get("instance_id") == worker.instance_id
        ):
            info = stack.ServiceInfo(
                "ssm_agent", address, record["pid"], True, "reused", log_path, detail
            )
            return info, address
        stack._stop_group(record["pid"])  # stale: another moto, instance or environment
        state = "restarted"
    argv = [AGENT_MARKER, "--instance-id", worker.instance_id, "--state-dir", str(paths.root)]
    proc = stack.spawn_service(
        paths,
        "ssm_agent",
        [*argv, "--port", str(port)],
        port,
        child_env,
        "FEEDLOT_SSM_AGENT_PORT",
        "SSM agent",
        instance_id=worker.instance_id,
        volume_id=worker.volume_id,
    )
    return stack.ServiceInfo("ssm_agent", address, proc.pid, True, state, log_path, detail), address


def agent_service_info(paths: Any) -> Any:
    """The agent's line in ``feedlot local status`` (None when this stack never started one)."""
    from feedlot_pipeline.local import stack

    record = stack._read_record(paths.record("ssm_agent"))
    if record is None:
        return None
    pid, port = record.get("pid"), int(record.get("port", 0))
    health = stack.service_health(port) if stack._ours(pid, AGENT_MARKER) else None
    alive = bool(health) and health.get("pid") == pid
    detail = f"instance {record.get('instance_id')}"
    if health:
        detail += (
            f", commands {health['commands']}, running {health['running']}, "
            f"failed {health['failed']}"
        )
    return stack.ServiceInfo(
        "ssm_agent",
        f"http://{LOOPBACK}:{port}",
        pid,
        alive,
        "running" if alive else "down",
        paths.logs / "ssm_agent.log",
        detail,
    )


# --- process entry point -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for the worker's SSM agent.")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--workdir", type=Path, help="EBS mount stand-in (default <state>/ebs)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    upstream = os.environ.get("AWS_ENDPOINT_URL")
    if not upstream:
        parser.error("AWS_ENDPOINT_URL (the moto server) must be set")
    # This process talks to moto itself; the stack's SSM endpoint is this very process.
    os.environ.pop("AWS_ENDPOINT_URL_SSM", None)
    state_dir = args.state_dir.expanduser().resolve()
    workdir = (args.workdir or state_dir / "ebs").expanduser().resolve()
    agent = SSMAgent(args.instance_id, state_dir, workdir, args.poll_seconds)
    endpoint = SSMEndpoint(agent, upstream, args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    endpoint.start()
    poller = threading.Thread(target=agent.run, name="ssm-agent-poll", daemon=True)
    poller.start()
    log.info(
        "SSM agent for %s on %s (workdir %s, upstream %s)",
        args.instance_id,
        endpoint.url,
        workdir,
        upstream,
    )
    stop.wait()
    agent.stop()
    poller.join(5)
    endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
