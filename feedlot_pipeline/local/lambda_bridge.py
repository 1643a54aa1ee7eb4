"""Local stand-in for "SNS triggers a Lambda": an HTTP endpoint that invokes the real handler.

moto cannot run Lambda functions without Docker, but its SNS delivers to ``http`` subscriptions
(synchronously, inside Publish). This bridge is that endpoint: it turns each SNS HTTP notification
into the event Lambda would receive, answers at once, and invokes the handler the way Lambda's
asynchronous invocation does: on a worker thread, retrying a failed invocation twice with backoff,
then recording the event and the error (in the shape of Lambda's on-failure destination record)
under ``<state>/lambda-failures/``. So the deployed handler runs unchanged on the local stack.

Run: ``python -m feedlot_pipeline.local.lambda_bridge --port 9010 --state-dir .feedlot``
(``feedlot local up`` does). ``GET /health`` reports counts as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from feedlot_pipeline.local.services import JsonLogFormatter

LOOPBACK = "127.0.0.1"
DEFAULT_HANDLER = "feedlot_pipeline.lambdas.sns_handler:handler"
DEFAULT_FUNCTION_NAME = "feedlot-sns-landing"
DEFAULT_RETRY_SECONDS = (1.0, 2.0)  # Lambda retries an async event twice (after ~1 and ~2 min)
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT_SECONDS = 60.0
SNS_PATH = "/sns"
# S3 ObjectCreated → SNS topic feedlot-file-drops → this path: the SNS message is the S3 event,
# which the S3 Lambda receives unwrapped, exactly as S3 would deliver it to a Lambda.
S3_PATH = "/s3"
DEFAULT_S3_HANDLER = "feedlot_pipeline.lambdas.s3_handler:handler"
DEFAULT_S3_FUNCTION_NAME = "feedlot-s3-landing"
MAX_BODY_BYTES = 1024 * 1024  # an SNS notification is at most ~256 KiB of message plus envelope

Handler = Callable[[dict, Any], Any]


# --- event shape ---------------------------------------------------------------------------------


def to_lambda_event(notification: Mapping[str, Any], subscription_arn: str) -> dict:
    """The event Lambda receives for one SNS notification delivered over HTTP.

    The HTTP body spells ``SigningCertURL``/``UnsubscribeURL``; the Lambda event spells
    ``SigningCertUrl``/``UnsubscribeUrl``. Absent optional fields are ``null`` / ``{}`` as in AWS.
    """
    attributes = notification.get("MessageAttributes") or {}
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": notification.get("Type", "Notification"),
                    "MessageId": notification["MessageId"],
                    "TopicArn": notification["TopicArn"],
                    "Subject": notification.get("Subject"),
                    "Message": notification["Message"],
                    "Timestamp": notification.get("Timestamp") or _iso_now(),
                    "SignatureVersion": notification.get("SignatureVersion", "1"),
                    "Signature": notification.get("Signature", ""),
                    "SigningCertUrl": notification.get("SigningCertURL")
                    or notification.get("SigningCertUrl", ""),
                    "UnsubscribeUrl": notification.get("UnsubscribeURL")
                    or notification.get("UnsubscribeUrl", ""),
                    "MessageAttributes": {
                        name: {"Type": attr.get("Type", "String"), "Value": attr.get("Value")}
                        for name, attr in attributes.items()
                        if isinstance(attr, Mapping)
                    },
                },
            }
        ]
    }


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LambdaContext:
    """The parts of Lambda's context object handlers (and Powertools) read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{self.function_version}/{os.getpid()}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(spec: str) -> Handler:
    """``module:function`` → the callable; imported on first use so the bridge starts fast."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"handler must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


# --- structured logging --------------------------------------------------------------------------


def _logger(log_path: Path, name: str) -> tuple[logging.Logger, logging.Handler]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"feedlot.lambda_bridge.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(JsonLogFormatter("lambda_bridge"))
    logger.addHandler(handler)
    return logger, handler


# --- asynchronous invocation ---------------------------------------------------------------------


@dataclass
class _Invocation:
    request_id: str
    event: dict
    message_id: str
    correlation_id: str | None
    prepare: Callable[[dict], None] | None = None
    attempts: int = 0
    first_attempt_at: str = ""
    last_error: dict | None = None
    finished: bool = False  # succeeded or recorded as failed: never both, never twice


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
    """Lambda's async invocation, locally: a worker pool, retries with backoff, failure records."""

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
        account: str = "123456789012",
    ) -> None:
        self.handler_spec = handler_spec
        self.failures_dir = failures_dir
        self.log = logger
        self.function_name = function_name
        self.function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.retry_seconds = retry_seconds
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
    ) -> None:
        """Queue one event; ``request_id`` stays the same for every retry, as in Lambda.

        ``prepare`` completes the event on the worker before the first attempt (look-ups that
        must not slow down the HTTP answer).
        """
        inv = _Invocation(request_id, event, message_id, correlation_id, prepare)
        with self._lock:
            self._pending[inv.request_id] = inv
            self.stats.received += 1
            self.stats.pending = len(self._pending)
        self._pool.submit(self._attempt, inv)

    def count_confirmation(self) -> None:
        with self._lock:
            self.stats.confirmations += 1

    def _resolve(self) -> Handler:
        if self._handler is None:
            self._handler = load_handler(self.handler_spec)
        return self._handler

    def _attempt(self, inv: _Invocation) -> None:
        if inv.finished:  # recorded when the bridge stopped while this retry waited
            return
        inv.attempts += 1
        if inv.attempts == 1:
            inv.first_attempt_at = _iso_now()
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
            if self._done(inv):
                self.stats.succeeded += 1

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
        """Write what Lambda's on-failure destination would receive; the failure topic reuses it."""
        with self._lock:
            if not self._done(inv):
                return None
            self.stats.failed += 1
        record = {
            "version": "1.0",
            "timestamp": _iso_now(),
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
        self.failures_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.failures_dir / f"{stamp}-{inv.request_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
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

    def _done(self, inv: _Invocation) -> bool:
        """Mark finished (caller holds the lock); False when it already was."""
        if inv.finished:
            return False
        inv.finished = True
        self._pending.pop(inv.request_id, None)
        self.stats.pending = len(self._pending)
        if not self._pending:
            self._idle.notify_all()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is queued, running or waiting for a retry."""
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


# --- HTTP endpoint -------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "feedlot-lambda-bridge/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?")[0] != "/health":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "GET /health or POST SNS notifications"})
            return
        self._reply(HTTPStatus.OK, self.server.bridge.health())

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        bridge = self.server.bridge
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body length {length} not accepted"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            bridge.log.warning(
                "rejected a POST that is not JSON", extra={"fields": {"error": str(err)}}
            )
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {err}"})
            return
        if not isinstance(body, dict):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "body is not a JSON object"})
            return
        kind = self.headers.get("x-amz-sns-message-type") or body.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            bridge.confirmation(kind, body)
            self._reply(HTTPStatus.OK, {"logged": kind})
            return
        if kind != "Notification":
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"unknown SNS message type {kind!r}"})
            return
        missing = [
            k for k in ("MessageId", "TopicArn", "Message") if not isinstance(body.get(k), str)
        ]
        if missing:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"notification lacks {missing}"})
            return
        if self.path.split("?")[0] == S3_PATH:
            s3_request_id = bridge.s3_notification(body)
            if s3_request_id is None:
                self._reply(HTTPStatus.BAD_REQUEST, {"error": "message is not an S3 event"})
            else:
                self._reply(HTTPStatus.OK, {"requestId": s3_request_id})
            return
        request_id = bridge.notification(body, self.headers.get("x-amz-sns-subscription-arn"))
        self._reply(HTTPStatus.OK, {"requestId": request_id})

    def _reply(self, status: HTTPStatus, body: dict) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one structured line per notification is logged by the bridge instead


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    bridge: LambdaBridge


class LambdaBridge:
    """The HTTP endpoint plus its invoker; ``start()`` serves on a background thread."""

    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        host: str = LOOPBACK,
        handler: str | None = None,
        function_name: str = DEFAULT_FUNCTION_NAME,
        retry_seconds: tuple[float, ...] | None = None,
        concurrency: int | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        s3_handler: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.handler_spec = handler or os.environ.get("FEEDLOT_SNS_HANDLER") or DEFAULT_HANDLER
        self.log, self._log_handler = _logger(
            self.state_dir / "logs" / "lambda_bridge.log", f"{port}-{id(self)}"
        )
        region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        self.invoker = Invoker(
            self.handler_spec,
            self.state_dir / "lambda-failures",
            self.log,
            function_name=function_name,
            retry_seconds=retry_seconds if retry_seconds is not None else _env_retry_seconds(),
            concurrency=concurrency
            or int(os.environ.get("FEEDLOT_LAMBDA_CONCURRENCY") or DEFAULT_CONCURRENCY),
            timeout_seconds=timeout_seconds,
            region=region,
        )
        self.s3_handler_spec = (
            s3_handler or os.environ.get("FEEDLOT_S3_HANDLER") or DEFAULT_S3_HANDLER
        )
        self.s3_invoker = Invoker(
            self.s3_handler_spec,
            self.state_dir / "lambda-failures",
            self.log,
            function_name=DEFAULT_S3_FUNCTION_NAME,
            retry_seconds=self.invoker.retry_seconds,
            concurrency=concurrency
            or int(os.environ.get("FEEDLOT_LAMBDA_CONCURRENCY") or DEFAULT_CONCURRENCY),
            timeout_seconds=timeout_seconds,
            region=region,
        )
        self._subscriptions: dict[str, str] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started_at = time.time()

    @property
    def endpoint(self) -> str:
        """The URL to subscribe to the topic with protocol ``http``."""
        return f"http://{self.host}:{self.port}{SNS_PATH}"

    @property
    def s3_endpoint(self) -> str:
        """The URL to subscribe to the file-drops topic with protocol ``http``."""
        return f"http://{self.host}:{self.port}{S3_PATH}"

    def start(self) -> LambdaBridge:
        self._server = _Server((self.host, self.port), _RequestHandler)
        self._server.bridge = self
        self.port = self._server.server_address[1]  # port 0 → the one the OS chose
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lambda-bridge-http", daemon=True
        )
        self._thread.start()
        self.log.info(
            "listening",
            extra={
                "fields": {
                    "endpoint": self.endpoint,
                    "handler": self.handler_spec,
                    "pid": os.getpid(),
                    "retry_seconds": list(self.invoker.retry_seconds),
                }
            },
        )
        return self

    def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop accepting, let pending invocations finish (or record them), release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.invoker.close(drain_seconds)
        self.s3_invoker.close(drain_seconds)
        self.log.info(
            "stopped",
            extra={
                "fields": {
                    **asdict_stats(self.invoker.stats),
                    "s3": asdict_stats(self.s3_invoker.stats),
                }
            },
        )
        self.log.removeHandler(self._log_handler)
        self._log_handler.close()

    def notification(self, body: dict, subscription_arn: str | None) -> str:
        """Queue the Lambda event of one notification; runs inside SNS's delivery, so no I/O."""
        attrs = body.get("MessageAttributes") or {}
        corr = attrs.get("correlation_id", {}).get("Value") if isinstance(attrs, dict) else None
        topic = body["TopicArn"]
        known = subscription_arn or self._subscriptions.get(topic)
        event = to_lambda_event(body, known or "")
        request_id = str(uuid.uuid4())
        self.log.info(
            "notification received",
            extra={
                "fields": {
                    "request_id": request_id,
                    "message_id": body["MessageId"],
                    "correlation_id": corr,
                    "topic_arn": topic,
                    "bytes": len(body["Message"]),
                }
            },
        )

        def fill_subscription(ev: dict) -> None:
            ev["Records"][0]["EventSubscriptionArn"] = self._subscription_arn(topic)

        self.invoker.submit(
            event, body["MessageId"], corr, request_id, None if known else fill_subscription
        )
        return request_id

    def s3_notification(self, body: dict) -> str | None:
        """Queue the S3 Lambda's event carried by one file-drops notification; None if none.

        The SNS message is the S3 event notification (``Records`` of ``aws:s3``, or the
        ``s3:TestEvent``); the handler gets it as is, as a Lambda subscribed to S3 would.
        """
        try:
            event = json.loads(body["Message"])
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or not (
            isinstance(event.get("Records"), list) or event.get("Event") == "s3:TestEvent"
        ):
            self.log.warning(
                "file-drops notification without an S3 event",
                extra={
                    "fields": {"message_id": body["MessageId"], "message": body["Message"][:300]}
                },
            )
            return None
        request_id = str(uuid.uuid4())
        keys = [
            ((r.get("s3") or {}).get("object") or {}).get("key")
            for r in event.get("Records") or []
            if isinstance(r, dict)
        ]
        self.log.info(
            "s3 event received",
            extra={
                "fields": {
                    "request_id": request_id,
                    "message_id": body["MessageId"],
                    "topic_arn": body["TopicArn"],
                    "event": event.get("Event") or "records",
                    "keys": keys,
                }
            },
        )
        self.s3_invoker.submit(event, body["MessageId"], None, request_id)
        return request_id

    def confirmation(self, kind: str, body: dict) -> None:
        self.invoker.count_confirmation()
        self.log.info(
            f"{kind} received",
            extra={
                "fields": {
                    "topic_arn": body.get("TopicArn"),
                    "subscribe_url": body.get("SubscribeURL"),
                    "message": body.get("Message"),
                }
            },
        )

    def _subscription_arn(self, topic_arn: str) -> str:
        """moto sends no x-amz-sns-subscription-arn header: look ours up once per topic."""
        cached = self._subscriptions.get(topic_arn)
        if cached:
            return cached
        arn = f"{topic_arn}:unknown-subscription"
        try:
            from feedlot_pipeline.core.aws import client

            sns = client("sns")
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
                TopicArn=topic_arn
            ):
                for sub in page["Subscriptions"]:
                    if sub.get("Endpoint", "").startswith(f"http://{self.host}:{self.port}/"):
                        arn = sub["SubscriptionArn"]
                        self._subscriptions[topic_arn] = arn
        except Exception as err:  # noqa: BLE001 - the ARN is informative; never block delivery
            self.log.warning(
                "could not look up the subscription ARN",
                extra={"fields": {"topic_arn": topic_arn, "error": str(err)}},
            )
        return arn

    def health(self) -> dict:
        return {
            "status": "ok",
            "pid": os.getpid(),
            "endpoint": self.endpoint,
            "handler": self.handler_spec,
            "function_name": self.invoker.function_name,
            "uptime_s": round(time.time() - self._started_at, 1),
            "failures_dir": str(self.invoker.failures_dir),
            **asdict_stats(self.invoker.stats),
            "s3": {
                "endpoint": self.s3_endpoint,
                "handler": self.s3_handler_spec,
                "function_name": self.s3_invoker.function_name,
                **asdict_stats(self.s3_invoker.stats),
            },
        }


def asdict_stats(stats: Stats) -> dict[str, int]:
    return dict(stats.__dict__)


def _env_retry_seconds() -> tuple[float, ...]:
    text = os.environ.get("FEEDLOT_LAMBDA_RETRY_SECONDS")
    if not text:
        return DEFAULT_RETRY_SECONDS
    return tuple(float(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; then drain pending invocations and exit."""
    parser = argparse.ArgumentParser(prog="python -m feedlot_pipeline.local.lambda_bridge")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("FEEDLOT_LAMBDA_PORT", "9010"))
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("FEEDLOT_STATE_DIR", ".feedlot"))
    )
    parser.add_argument(
        "--handler",
        default=None,
        help=f"module:function (default FEEDLOT_SNS_HANDLER or {DEFAULT_HANDLER})",
    )
    parser.add_argument("--drain-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    bridge = LambdaBridge(args.state_dir, args.port, host=args.host, handler=args.handler)
    try:
        bridge.start()
    except OSError as err:
        print(
            f"lambda bridge: cannot listen on {args.host}:{args.port}: {err}; "
            "set FEEDLOT_LAMBDA_PORT",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    bridge.stop(args.drain_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
