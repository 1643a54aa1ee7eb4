"""The local stack's SSM API endpoint (``AWS_ENDPOINT_URL_SSM``), served by the SSM agent.

moto 5.2 implements neither ``CancelCommand`` nor ``ListCommandInvocations`` (HTTP 500), and its
``GetCommandInvocation`` says ``Success`` the moment a command is sent, so neither the cancel nor
the real status can travel through moto. This endpoint answers those three calls for the agent's
instance from what the agent actually ran (Pending → InProgress → Success | Failed | TimedOut |
Cancelled, exit code, stdout/stderr) and forwards every other SSM request to moto unchanged. The
dispatch code makes the same calls it makes against AWS; a ``CancelCommand`` reaches the agent
like the real service's cancel reaches the real agent, and the agent kills the process group.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, TextIO

from feedlot_pipeline.local.daemon import HttpDaemon, JsonHandler
from feedlot_pipeline.local.services import LOOPBACK
from feedlot_pipeline.local.ssm_executor import SSMAgent, pending

AMZ_JSON = "application/x-amz-json-1.1"


class _ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Handler(JsonHandler):
    server_version = "feedlot-ssm-endpoint/1"

    @property
    def endpoint(self) -> SSMEndpoint:
        return self.service  # type: ignore[return-value]

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path == "/health":
            self.reply_json(HTTPStatus.OK, self.endpoint.health())
        else:
            self._forward(b"")

    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.read_body(length)
        operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        if operation in SSMEndpoint.OWN:
            try:
                answer = self.endpoint.call(operation, json.loads(body or b"{}"))
            except _ApiError as err:
                error = {"__type": err.code, "message": str(err)}
                self.send_bytes(400, json.dumps(error).encode(), AMZ_JSON)
                return
            except Exception as err:  # noqa: BLE001 - answer like a service error
                self.endpoint.log.error(
                    "call failed",
                    extra={
                        "fields": {"operation": operation, "error": f"{type(err).__name__}: {err}"}
                    },
                )
                error = {"__type": "InternalServerError", "message": str(err)}
                self.send_bytes(500, json.dumps(error).encode(), AMZ_JSON)
                return
            if answer is not None:
                self.send_bytes(HTTPStatus.OK, json.dumps(answer).encode(), AMZ_JSON)
                return
        self._forward(body)

    def _forward(self, body: bytes) -> None:
        import requests

        skip = {"host", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        try:
            response = requests.request(
                self.command,
                self.endpoint.upstream + self.path,
                data=body,
                headers=headers,
                timeout=60,
            )
        except requests.RequestException as err:
            self.send_bytes(502, str(err).encode(), "text/plain")
            return
        self.send_bytes(
            response.status_code,
            response.content,
            response.headers.get("Content-Type", AMZ_JSON),
        )


class SSMEndpoint(HttpDaemon):
    """HTTP front for SSM: three calls answered by the agent, the rest forwarded to moto."""

    name = "ssm_agent"
    handler_class = _Handler
    OWN = ("CancelCommand", "GetCommandInvocation", "ListCommandInvocations")

    def __init__(
        self,
        agent: SSMAgent,
        upstream: str,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        log_stream: TextIO | None = None,
    ) -> None:
        super().__init__(host, port, log_stream=log_stream)
        self.agent = agent
        self.upstream = upstream.rstrip("/")

    def health(self) -> dict[str, Any]:
        return {**super().health(), **self.agent.health()}

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
                record = pending(command_id)
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
                    items.append(agent.invocation(record or pending(command_id), details))
                # Instances without an agent never run anything: Pending, as for an offline one.
                for other in self._other_instances(command_id):
                    item = agent.invocation(pending(command_id), details)
                    items.append({**item, "InstanceId": other, "InstanceName": ""})
                return {"CommandInvocations": items}
            records = agent.newest_first()
            return {"CommandInvocations": [agent.invocation(r, details) for r in records]}
        return None
