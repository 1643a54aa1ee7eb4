"""PipesSSMClient: run a command on an EC2 worker through SSM Run Command, speaking Dagster Pipes.

dagster-aws has Pipes clients for ECS, Lambda, Glue and EMR but none for SSM; this one follows
PipesECSClient. The worker gets its Pipes parameters as ``DAGSTER_PIPES_CONTEXT`` /
``DAGSTER_PIPES_MESSAGES`` set inline in the shell command (SSM has no per-invocation
environment), loads its context from S3 and writes its messages to S3 (dagster_pipes'
PipesS3ContextLoader / PipesS3MessageWriter), under one configurable bucket and prefix.

Completion needs both signals: the worker's Pipes ``closed`` message (its results are all in) and
a terminal SSM invocation status (the process has exited). SSM statuses move Pending →
InProgress → Success | Failed | Cancelled | TimedOut (| Cancelling in between). The client
cancels the command when its own timeout passes or the Dagster run is interrupted, and raises
with the worker's own exception when the worker reported one.
"""

import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster import PipesClient
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.pipes.client import PipesClientCompletedInvocation, PipesParams
from dagster._core.pipes.context import PipesMessageHandler
from dagster._core.pipes.utils import open_pipes_session
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

TERMINAL_STATUSES = frozenset({"Success", "Failed", "Cancelled", "TimedOut"})
DEFAULT_DOCUMENT = "AWS-RunShellScript"
TAIL_LINES = 40


class PipesSSMError(dg.DagsterError):
    """The SSM command failed, timed out or was cancelled; the message says why."""


@dataclass(frozen=True)
class Invocation:
    """One command invocation as SSM reports it (the subset the client needs)."""

    command_id: str
    instance_id: str
    status: str
    details: str = ""
    response_code: int | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class _ClosedWatcher:
    """Stands in front of the session's message handler to keep the ``closed`` message's params.

    PipesMessageHandler records the worker's exception only as an engine event; the client needs
    it to raise with the worker's own error.
    """

    def __init__(self, handler: PipesMessageHandler) -> None:
        self._handler = handler
        self.closed_params: Mapping[str, Any] | None = None
        self.abandoned = False

    @property
    def received_closed_message(self) -> bool:
        # After a cancel nothing more is worth waiting for: the reader thread may stop at once
        # rather than poll S3 for another 10 s. (The session's own "no closed message" warning
        # reads the real handler, so it still fires.)
        return self.abandoned or self._handler.received_closed_message

    def handle_message(self, message: Mapping[str, Any]) -> None:
        if message.get("method") == "closed":
            self.closed_params = message.get("params") or {}
        self._handler.handle_message(message)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


class PipesSSMMessageReader(PipesS3MessageReader):
    """PipesS3MessageReader writing under a fixed key prefix (IAM grants only that prefix)."""

    def __init__(self, *, bucket: str, client: Any, key_prefix: str = "", interval: float = 5):
        super().__init__(bucket=bucket, client=client, interval=interval)
        self.key_prefix = key_prefix
        self.watcher: _ClosedWatcher | None = None

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.key_prefix}{params['key_prefix']}/messages"}

    @contextmanager
    def read_messages(self, handler: PipesMessageHandler) -> Iterator[PipesParams]:
        self.watcher = _ClosedWatcher(handler)
        with super().read_messages(self.watcher) as params:  # type: ignore[arg-type]
            yield params

    @property
    def closed_params(self) -> Mapping[str, Any] | None:
        return self.watcher.closed_params if self.watcher else None

    def abandon(self) -> None:
        """The command was cancelled: stop reading messages when the session closes."""
        if self.watcher:
            self.watcher.abandoned = True


def worker_exception(closed_params: Mapping[str, Any] | None) -> str | None:
    """'Name: message' of the exception a worker reported when closing Pipes, if any."""
    exc = (closed_params or {}).get("exception")
    if not exc:
        return None
    name, message = exc.get("name") or "Exception", (exc.get("message") or "").strip()
    # dagster_pipes' message is format_exception_only's line, already "Name: text".
    return message if message.startswith(f"{name}:") else f"{name}: {message}".strip()


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def shell_command(command: Sequence[str] | str, env: Mapping[str, str]) -> str:
    """The shell line SSM runs: ``VAR=value … command``, every value quoted."""
    line = command if isinstance(command, str) else shlex.join(command)
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"{assignments} {line}" if assignments else line


class PipesSSMClient(PipesClient, TreatAsResourceParam):
    """A Pipes client that runs a shell command on EC2 instances with ``ssm:SendCommand``.

    Args:
        ssm_client: boto3 SSM client.
        s3_client: boto3 S3 client for the Pipes context and messages.
        bucket: bucket holding the Pipes context and messages.
        key_prefix: prefix of every Pipes object (e.g. ``pipes/``); IAM grants only this prefix.
        document_name: SSM document with a ``commands`` parameter (AWS-RunShellScript).
        poll_seconds: how often SSM and S3 are polled.
        closed_grace_seconds: after SSM reports the process ended, how long to wait for the
            Pipes ``closed`` message still on its way (the reader polls S3 every poll_seconds).
        forward_termination: cancel the command when the Dagster run is interrupted.
    """

    def __init__(
        self,
        *,
        ssm_client: Any,
        s3_client: Any,
        bucket: str,
        key_prefix: str = "pipes/",
        document_name: str = DEFAULT_DOCUMENT,
        poll_seconds: float = 5.0,
        closed_grace_seconds: float = 30.0,
        forward_termination: bool = True,
    ) -> None:
        self._ssm = ssm_client
        self._s3 = s3_client
        self.bucket = bucket
        self.key_prefix = key_prefix
        self.document_name = document_name
        self.poll_seconds = poll_seconds
        self.closed_grace_seconds = closed_grace_seconds
        self.forward_termination = forward_termination

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(  # type: ignore[override]
        self,
        *,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        command: Sequence[str] | str,
        instance_ids: Sequence[str] | None = None,
        targets: Sequence[Mapping[str, Any]] | None = None,
        timeout_seconds: float = 3600,
        execution_timeout_margin_seconds: int = 60,
        extras: Mapping[str, Any] | None = None,
        comment: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Send ``command`` to one instance (by id, or a tag target matching one), wait, report.

        ``timeout_seconds`` bounds the whole wait: past it the command is cancelled and
        PipesSSMError raised. The document's ``executionTimeout`` is that plus a margin, so the
        instance stops the process itself even if this Dagster process dies. ``env`` is set on
        the command line (visible in SSM's command history: configuration, never secrets).
        """
        if bool(instance_ids) == bool(targets):
            raise dg.DagsterInvariantViolationError("give exactly one of instance_ids or targets")
        if instance_ids and len(instance_ids) != 1:
            # A Pipes session has one message writer: one worker per dispatch.
            raise dg.DagsterInvariantViolationError("a Pipes session runs on exactly one instance")
        run_key = context.run_id
        reader = PipesSSMMessageReader(
            bucket=self.bucket,
            client=self._s3,
            key_prefix=f"{self.key_prefix}{run_key}/",
            interval=self.poll_seconds,
        )
        injector = PipesS3ContextInjector(
            bucket=self.bucket, client=self._s3, key_prefix=f"{self.key_prefix}{run_key}/"
        )
        command_id: str | None = None
        invocation: Invocation | None = None
        with open_pipes_session(
            context=context, context_injector=injector, message_reader=reader, extras=extras
        ) as session:
            line = shell_command(command, {**(env or {}), **session.get_bootstrap_env_vars()})
            execution_timeout = int(timeout_seconds) + execution_timeout_margin_seconds
            send: dict[str, Any] = {
                "DocumentName": self.document_name,
                "Parameters": {"commands": [line], "executionTimeout": [str(execution_timeout)]},
                "Comment": (comment or f"dagster run {context.run_id}")[:100],
                "MaxConcurrency": "1",
                "MaxErrors": "0",
            }
            if instance_ids:
                send["InstanceIds"] = list(instance_ids)
            else:
                send["Targets"] = [dict(t) for t in targets or []]
            try:
                command_id = self._ssm.send_command(**send)["Command"]["CommandId"]
                context.log.info(
                    f"[pipes] SSM command {command_id} sent ({self.document_name}, "
                    f"{'instances ' + ','.join(instance_ids) if instance_ids else send['Targets']})"
                )
                invocation = self._wait(
                    context, session.message_handler, reader, command_id, timeout_seconds
                )
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                if command_id and self.forward_termination:
                    context.log.warning(f"[pipes] run interrupted: cancelling SSM {command_id}")
                    self._cancel(context, command_id)
                    reader.abandon()
                raise
            self._raise_for_failure(context, reader, invocation)
        metadata = {
            "ssm_command_id": invocation.command_id,
            "ssm_instance_id": invocation.instance_id,
            "ssm_status": invocation.status,
        }
        return PipesClientCompletedInvocation(session, metadata=metadata)

    # --- waiting ---------------------------------------------------------------------------------

    def _wait(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        handler: PipesMessageHandler,
        reader: PipesSSMMessageReader,
        command_id: str,
        timeout_seconds: float,
    ) -> Invocation:
        """Poll until the process ended and Pipes closed (or the grace for that ran out)."""
        deadline = time.monotonic() + timeout_seconds
        ended_at: float | None = None
        last_status = ""
        while True:
            invocation = self.invocation(command_id)
            if invocation.status != last_status:
                context.log.info(
                    f"[pipes] SSM {command_id} on {invocation.instance_id or '?'}: "
                    f"{invocation.status}"
                )
                last_status = invocation.status
            closed = handler.received_closed_message
            if invocation.terminal:
                if closed:
                    return invocation
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at >= self.closed_grace_seconds:
                    return invocation
            if time.monotonic() >= deadline:
                context.log.error(f"[pipes] timed out after {timeout_seconds:g} s: cancelling")
                self._cancel(context, command_id)
                reader.abandon()
                raise PipesSSMError(
                    f"SSM command {command_id} did not finish within {timeout_seconds:g} s "
                    f"(last status {invocation.status}); cancelled"
                    + self._output_tail(self._final(command_id, invocation))
                )
            time.sleep(self.poll_seconds)

    def invocation(self, command_id: str) -> Invocation:
        """The command's invocation; Pending until SSM lists one (it resolves targets lazily)."""
        listed = self._ssm.list_command_invocations(CommandId=command_id).get(
            "CommandInvocations", []
        )
        if not listed:
            return Invocation(command_id, "", "Pending")
        if len(listed) > 1:
            self._ssm.cancel_command(CommandId=command_id)
            raise PipesSSMError(
                f"SSM command {command_id} reached {len(listed)} instances; a Pipes session "
                "needs exactly one: narrow the target"
            )
        item = listed[0]
        return Invocation(
            command_id, item.get("InstanceId", ""), item["Status"], item.get("StatusDetails", "")
        )

    def _final(self, command_id: str, invocation: Invocation) -> Invocation:
        """The invocation with its exit code and output (GetCommandInvocation has them)."""
        if not invocation.instance_id:
            return invocation
        try:
            got = self._ssm.get_command_invocation(
                CommandId=command_id, InstanceId=invocation.instance_id
            )
        except (ClientError, BotoCoreError):
            return invocation
        return Invocation(
            command_id,
            invocation.instance_id,
            got.get("Status", invocation.status),
            got.get("StatusDetails", ""),
            got.get("ResponseCode"),
            got.get("StandardOutputContent", ""),
            got.get("StandardErrorContent", ""),
        )

    def _cancel(
        self, context: dg.AssetExecutionContext | dg.OpExecutionContext, command_id: str
    ) -> None:
        try:
            self._ssm.cancel_command(CommandId=command_id)
        except (ClientError, BotoCoreError) as err:
            context.log.warning(f"[pipes] could not cancel SSM command {command_id}: {err}")

    # --- results ---------------------------------------------------------------------------------

    @staticmethod
    def _output_tail(invocation: Invocation) -> str:
        parts = []
        if invocation.stderr.strip():
            parts.append(f"\n--- stderr (tail) ---\n{_tail(invocation.stderr)}")
        if invocation.stdout.strip():
            parts.append(f"\n--- stdout (tail) ---\n{_tail(invocation.stdout)}")
        return "".join(parts)

    def _raise_for_failure(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        reader: PipesSSMMessageReader,
        invocation: Invocation,
    ) -> None:
        worker_error = worker_exception(reader.closed_params)
        if invocation.status == "Success" and reader.closed_params is not None and not worker_error:
            return
        final = self._final(invocation.command_id, invocation)
        tail = self._output_tail(final)
        if tail:
            context.log.error(f"[pipes] SSM {final.command_id} output:{tail}")
        where = f"SSM command {final.command_id} on {final.instance_id}"
        code = f", exit code {final.response_code}" if final.response_code is not None else ""
        if worker_error:
            raise PipesSSMError(f"worker failed: {worker_error} ({where}: {final.status}{code})")
        if final.status == "Success":
            raise PipesSSMError(
                f"{where} succeeded but the worker never closed its Pipes session (not a Pipes "
                f"worker, or its messages did not reach s3://{self.bucket}/{self.key_prefix})"
            )
        raise PipesSSMError(f"{where} ended {final.status} ({final.details}{code}){tail}")
