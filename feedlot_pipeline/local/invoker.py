"""Lambda's asynchronous invocation, locally: a worker pool, retries with backoff, failure records.

An event is retried after each delay of ``retry_seconds`` (AWS retries an async event for up to
six hours; the local default, ``FEEDLOT_LAMBDA_RETRY_SECONDS`` = 1, 2, 4, 8, 16, 30, 60 s, rides
out a two-minute outage of anything downstream and still ends). When the retries are spent the
event and the error are written, in the shape of Lambda's on-failure destination record, to
``<state>/lambda-failures/`` (mode 0600: it holds the records) and published as a failure
document, as the deployed function's OnFailure destination does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feedlot_pipeline.local.lambda_runtime import (
    ACCOUNT,
    DEFAULT_TIMEOUT_SECONDS,
    Handler,
    LambdaContext,
    function_arn,
    iso_now,
    load_handler,
)
from feedlot_pipeline.local.state import private_dir, write_private

DEFAULT_RETRY_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
DEFAULT_CONCURRENCY = 8
DEFAULT_FUNCTION_NAME = "feedlot-sns-landing"


@dataclass
class _Invocation:
    request_id: str
    event: dict
    message_id: str
    correlation_id: str | None
    prepare: Callable[[dict], None] | None = None
    # Called once when the invocation is settled: True = succeeded or parked as a failure (the
    # source may forget the event), False = the bridge stopped first (the source keeps it).
    on_done: Callable[[bool], None] | None = None
    attempts: int = 0
    first_attempt_at: str = ""
    last_error: dict | None = None
    finished: bool = False  # succeeded or being recorded as failed: never both, never twice


@dataclass
class Stats:
    received: int = 0
    attempts: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    pending: int = 0
    confirmations: int = 0


class Invoker:
    """Invokes one handler the way Lambda invokes a function asynchronously."""

    def __init__(
        self,
        handler_spec: str,
        failures_dir: Path,
        logger: logging.Logger,
        *,
        function_name: str = DEFAULT_FUNCTION_NAME,
        retry_seconds: tuple[float, ...] = DEFAULT_RETRY_SECONDS,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        region: str = "us-east-1",
        account: str = ACCOUNT,
    ) -> None:
        self.handler_spec = handler_spec
        self.failures_dir = failures_dir
        self.log = logger
        self.function_name = function_name
        self.function_arn = function_arn(region, function_name, account)
        self.retry_seconds = tuple(retry_seconds)
        self.timeout_seconds = timeout_seconds
        self.stats = Stats()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="lambda")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: dict[str, _Invocation] = {}
        self._timers: set[threading.Timer] = set()
        self._handler: Handler | None = None

    def submit(
        self,
        event: dict,
        message_id: str,
        correlation_id: str | None,
        request_id: str,
        prepare: Callable[[dict], None] | None = None,
        on_done: Callable[[bool], None] | None = None,
    ) -> None:
        """Queue one event; ``request_id`` stays the same for every retry, as in Lambda.

        ``prepare`` completes the event on the worker before the first attempt (look-ups that
        must not slow down the HTTP answer). ``on_done`` (a durable source: the records inbox)
        is told when the event may be deleted; such an event is not recorded as a failure when
        the bridge stops before it finished: its source delivers it again.
        """
        inv = _Invocation(request_id, event, message_id, correlation_id, prepare, on_done)
        with self._lock:
            self._pending[inv.request_id] = inv
            self.stats.received += 1
            self.stats.pending = len(self._pending)
        self._pool.submit(self._attempt, inv)

    def count_confirmation(self) -> None:
        with self._lock:
            self.stats.confirmations += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return asdict(self.stats)

    def _resolve(self) -> Handler:
        if self._handler is None:
            self._handler = load_handler(self.handler_spec)
        return self._handler

    def _attempt(self, inv: _Invocation) -> None:
        if inv.finished:  # recorded when the bridge stopped while this retry waited
            return
        inv.attempts += 1
        if inv.attempts == 1:
            inv.first_attempt_at = iso_now()
            if inv.prepare is not None:
                inv.prepare(inv.event)
        with self._lock:
            self.stats.attempts += 1
        context = LambdaContext(
            function_name=self.function_name,
            invoked_function_arn=self.function_arn,
            aws_request_id=inv.request_id,
            timeout_seconds=self.timeout_seconds,
        )
        fields = {
            "request_id": inv.request_id,
            "message_id": inv.message_id,
            "correlation_id": inv.correlation_id,
            "attempt": inv.attempts,
        }
        started = time.monotonic()
        try:
            result = self._resolve()(inv.event, context)
        except Exception as err:  # noqa: BLE001 - any handler error is an invocation failure
            inv.last_error = {
                "errorType": type(err).__name__,
                "errorMessage": str(err),
                "stackTrace": traceback.format_exception(err)[-12:],
            }
            fields |= {"error": f"{type(err).__name__}: {err}", "ms": _ms(started)}
            if inv.attempts <= len(self.retry_seconds):
                delay = self.retry_seconds[inv.attempts - 1]
                self.log.warning(
                    "invocation failed, will retry",
                    extra={"fields": fields | {"retry_in_s": delay}},
                )
                self._retry_later(inv, delay)
            else:
                self._record_failure(inv, "RetriesExhausted")
            return
        duration = _ms(started)
        if duration > self.timeout_seconds * 1000:
            self.log.warning("invocation exceeded the function timeout", extra={"fields": fields})
        self.log.info(
            "invocation succeeded",
            extra={"fields": fields | {"ms": duration, "result": _short(result)}},
        )
        with self._lock:
            claimed = self._claim(inv)
            if claimed:
                self.stats.succeeded += 1
                self._settle(inv)
        if claimed:
            self._done(inv, True)

    def _done(self, inv: _Invocation, forget: bool) -> None:
        if inv.on_done is not None:
            try:
                inv.on_done(forget)
            except Exception as err:  # noqa: BLE001 - the source redelivers; never lose a worker
                self.log.warning(
                    "could not settle the event at its source",
                    extra={"fields": {"request_id": inv.request_id, "error": str(err)}},
                )

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _retry_later(self, inv: _Invocation, delay: float) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            with contextlib.suppress(RuntimeError):  # pool shut down while the retry waited
                self._pool.submit(self._attempt, inv)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            self.stats.retried += 1
            self._timers.add(timer)
        timer.start()

    def _record_failure(self, inv: _Invocation, condition: str) -> Path | None:
        """Write what Lambda's on-failure destination would receive, publish the failure
        document, and only then count the failure: whoever waits for the count finds both."""
        with self._lock:
            if not self._claim(inv):
                return None
        try:
            path = self._write_failure(inv, condition)
            error = inv.last_error or {}
            self.log.error(
                "invocation failed for good",
                extra={
                    "fields": {
                        "request_id": inv.request_id,
                        "message_id": inv.message_id,
                        "correlation_id": inv.correlation_id,
                        "attempts": inv.attempts,
                        "condition": condition,
                        "error": f"{error.get('errorType')}: {error.get('errorMessage')}",
                        "failure_record": str(path),
                    }
                },
            )
            self._report(inv, condition, path)
        finally:
            with self._lock:
                self.stats.failed += 1
                self._settle(inv)
        self._done(inv, True)  # parked with its reason (failure record + failure document)
        return path

    def _write_failure(self, inv: _Invocation, condition: str) -> Path:
        record = {
            "version": "1.0",
            "timestamp": iso_now(),
            "requestContext": {
                "requestId": inv.request_id,
                "functionArn": f"{self.function_arn}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": inv.attempts,
            },
            "requestPayload": inv.event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": inv.last_error,
            "handler": self.handler_spec,
            "firstAttemptAt": inv.first_attempt_at,
        }
        private_dir(self.failures_dir)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.failures_dir / f"{stamp}-{inv.request_id}.json"
        write_private(path, json.dumps(record, indent=2, default=str))
        return path

    def _report(self, inv: _Invocation, condition: str, path: Path) -> None:
        """Publish the failure document, as the deployed function's OnFailure destination does."""
        from feedlot_pipeline.core.failures import report_failure

        error = inv.last_error or {}
        message_id = report_failure(
            source=self.function_name,
            stage="lambda",
            reason=f"{condition}: {error.get('errorType')}: {error.get('errorMessage')}",
            payload=inv.event,
            event_id=inv.message_id,
            details={
                "handler": self.handler_spec,
                "request_id": inv.request_id,
                "correlation_id": inv.correlation_id,
                "attempts": inv.attempts,
                "condition": condition,
                "failure_record": str(path),
            },
        )
        fields = {"request_id": inv.request_id, "event_id": inv.message_id}
        if message_id is None:
            self.log.error("failure document not published", extra={"fields": fields})
        else:
            self.log.info(
                "failure document published",
                extra={"fields": fields | {"failure_message_id": message_id}},
            )

    def _claim(self, inv: _Invocation) -> bool:
        """Mark finished (caller holds the lock); False when it already was."""
        if inv.finished:
            return False
        inv.finished = True
        return True

    def _settle(self, inv: _Invocation) -> None:
        """No longer pending (caller holds the lock); wakes ``wait_idle`` when none is."""
        self._pending.pop(inv.request_id, None)
        self.stats.pending = len(self._pending)
        if not self._pending:
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is queued, running, waiting for a retry or being recorded."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self, drain_seconds: float) -> None:
        """Finish what is pending (retries included) for a while; record the rest as failures."""
        if not self.wait_idle(drain_seconds):
            with self._lock:
                left = list(self._pending.values())
                for timer in self._timers:
                    timer.cancel()
            for inv in left:
                if inv.on_done is not None:  # its source keeps it and delivers it again
                    with self._lock:
                        if self._claim(inv):
                            self._settle(inv)
                    self._done(inv, False)
                    continue
                inv.last_error = inv.last_error or {
                    "errorType": "BridgeStopped",
                    "errorMessage": "the Lambda bridge stopped before the invocation finished",
                }
                self._record_failure(inv, "BridgeStopped")
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "…"
