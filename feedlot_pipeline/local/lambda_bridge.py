"""Local stand-in for "SNS triggers a Lambda": an HTTP endpoint that invokes the real handler.

moto cannot run Lambda functions without Docker, but its SNS delivers to ``http`` subscriptions
(synchronously, inside Publish). This bridge is that endpoint: it turns each SNS HTTP notification
into the event Lambda would receive, answers at once, and invokes the handler the way Lambda's
asynchronous invocation does (``invoker.py``: a worker pool, retries with backoff, failure
records under ``<state>/lambda-failures/``). So the deployed handler runs unchanged locally.

The records topic reaches the bridge through its durable inbox queue (``records_inbox.py``,
``--records-inbox``, what ``feedlot local up`` uses): a message published while the bridge is down
waits there, and is deleted only once the handler succeeded or its failure was parked. The HTTP
route stays for direct use.

Two routes: ``/sns`` for the records topic (``lambdas.sns_handler``) and ``/s3`` for the
file-drops topic, whose messages are S3 event notifications handed to ``lambdas.s3_handler``
unwrapped, exactly as S3 would deliver them to a Lambda.

Run: ``python -m feedlot_pipeline.local.lambda_bridge --port 9010 --state-dir .feedlot``
(``feedlot local up`` does). ``GET /health`` reports counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from feedlot_pipeline.core.settings import LocalSettings, Settings
from feedlot_pipeline.local.daemon import (
    MAX_CONNECTIONS,
    READ_TIMEOUT_SECONDS,
    HttpDaemon,
    JsonHandler,
    wait_for_signal,
)
from feedlot_pipeline.local.invoker import (  # noqa: F401 - re-exported
    DEFAULT_CONCURRENCY,
    DEFAULT_FUNCTION_NAME,
    DEFAULT_RETRY_SECONDS,
    Invoker,
    Stats,
)
from feedlot_pipeline.local.lambda_runtime import (  # noqa: F401 - re-exported
    DEFAULT_TIMEOUT_SECONDS,
    Handler,
    LambdaContext,
    load_handler,
    to_lambda_event,
)
from feedlot_pipeline.local.records_inbox import RecordsInbox
from feedlot_pipeline.local.services import LOOPBACK

DEFAULT_S3_FUNCTION_NAME = "feedlot-s3-landing"
SNS_PATH = "/sns"
S3_PATH = "/s3"
MAX_BODY_BYTES = 1024 * 1024  # an SNS notification is at most ~256 KiB of message plus envelope


class _BridgeHandler(JsonHandler):
    server_version = "feedlot-lambda-bridge/1"

    @property
    def bridge(self) -> LambdaBridge:
        return self.service  # type: ignore[return-value]

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?")[0] != "/health":
            self.reply_json(
                HTTPStatus.NOT_FOUND, {"error": "GET /health or POST SNS notifications"}
            )
            return
        self.reply_json(HTTPStatus.OK, self.bridge.health())

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        bridge = self.bridge
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length <= 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"body length {length} not accepted"})
            return
        try:
            body = json.loads(self.read_body(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            bridge.log.warning(
                "rejected a POST that is not JSON", extra={"fields": {"error": str(err)}}
            )
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {err}"})
            return
        if not isinstance(body, dict):
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": "body is not a JSON object"})
            return
        kind = self.headers.get("x-amz-sns-message-type") or body.get("Type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            bridge.confirmation(kind, body)
            self.reply_json(HTTPStatus.OK, {"logged": kind})
            return
        if kind != "Notification":
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"unknown SNS message type {kind!r}"})
            return
        missing = [
            k for k in ("MessageId", "TopicArn", "Message") if not isinstance(body.get(k), str)
        ]
        if missing:
            self.reply_json(HTTPStatus.BAD_REQUEST, {"error": f"notification lacks {missing}"})
            return
        if self.path.split("?")[0] == S3_PATH:
            s3_request_id = bridge.s3_notification(body)
            if s3_request_id is None:
                self.reply_json(HTTPStatus.BAD_REQUEST, {"error": "message is not an S3 event"})
            else:
                self.reply_json(HTTPStatus.OK, {"requestId": s3_request_id})
            return
        request_id = bridge.notification(body, self.headers.get("x-amz-sns-subscription-arn"))
        self.reply_json(HTTPStatus.OK, {"requestId": request_id})


class LambdaBridge(HttpDaemon):
    """The HTTP endpoint plus its two invokers; ``start()`` serves on a background thread.

    Unset arguments come from the settings (``LocalSettings``: handlers, retries, concurrency).
    """

    name = "lambda_bridge"
    handler_class = _BridgeHandler

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
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        records_inbox: str | None = None,
    ) -> None:
        local = LocalSettings()
        self.state_dir = Path(state_dir)
        super().__init__(
            host,
            port,
            log_path=self.state_dir / "logs" / "lambda_bridge.log",
            read_timeout=read_timeout,
            max_connections=max_connections,
        )
        self.handler_spec = handler or local.sns_handler
        self.s3_handler_spec = s3_handler or local.s3_handler
        retries = retry_seconds if retry_seconds is not None else local.retry_delays()
        region = Settings().region
        failures = self.state_dir / "lambda-failures"
        self.invoker, self.s3_invoker = (
            Invoker(
                spec,
                failures,
                self.log,
                function_name=name,
                retry_seconds=retries,
                concurrency=concurrency or local.lambda_concurrency,
                timeout_seconds=timeout_seconds,
                region=region,
            )
            for spec, name in (
                (self.handler_spec, function_name),
                (self.s3_handler_spec, DEFAULT_S3_FUNCTION_NAME),
            )
        )
        self._subscriptions: dict[str, str] = {}
        self.inbox: RecordsInbox | None = None
        if records_inbox:
            self.inbox = RecordsInbox(
                records_inbox,
                lambda envelope, done: self.notification(envelope, None, on_done=done),
                self.invoker.pending_count,
                self.log,
                max_pending=4 * (concurrency or local.lambda_concurrency),
            )

    @property
    def endpoint(self) -> str:
        """The URL to subscribe to the topic with protocol ``http``."""
        return f"{self.url}{SNS_PATH}"

    @property
    def s3_endpoint(self) -> str:
        """The URL to subscribe to the file-drops topic with protocol ``http``."""
        return f"{self.url}{S3_PATH}"

    def start(self) -> LambdaBridge:
        super().start()
        if self.inbox is not None:
            self.inbox.start()
        return self

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "endpoint": self.endpoint,
            "handler": self.handler_spec,
            "s3_handler": self.s3_handler_spec,
            "retry_seconds": list(self.invoker.retry_seconds),
        }

    def stop(self, drain_seconds: float = 10.0) -> None:  # type: ignore[override]
        """Stop accepting, let pending invocations finish (or record them), release the port."""
        if self.inbox is not None:
            self.inbox.stop()  # nothing new; what is pending finishes or goes back to the queue
        self.stop_serving(grace=min(drain_seconds, 5.0))
        self.invoker.close(drain_seconds)
        self.s3_invoker.close(drain_seconds)
        self.log.info(
            "stopped",
            extra={"fields": {**self.invoker.counts(), "s3": self.s3_invoker.counts()}},
        )
        self.close_log()

    def notification(
        self,
        body: dict,
        subscription_arn: str | None,
        on_done: Callable[[bool], None] | None = None,
    ) -> str:
        """Queue the Lambda event of one notification; runs inside SNS's delivery, so no I/O.

        ``on_done``: the inbox's callback, told when the message may be deleted."""
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
            event,
            body["MessageId"],
            corr,
            request_id,
            None if known else fill_subscription,
            on_done,
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
        """moto sends no x-amz-sns-subscription-arn header: look ours up once per topic.

        An event that came through the records inbox has no subscription of the bridge's URL
        (the queue is subscribed): the stand-in ARN is kept too, not looked up per event.
        """
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
                    if sub.get("Endpoint", "").startswith(f"{self.url}/"):
                        arn = sub["SubscriptionArn"]
            self._subscriptions[topic_arn] = arn
        except Exception as err:  # noqa: BLE001 - the ARN is informative; never block delivery
            self.log.warning(
                "could not look up the subscription ARN",
                extra={"fields": {"topic_arn": topic_arn, "error": str(err)}},
            )
        return arn

    def health(self) -> dict[str, Any]:
        return {
            **super().health(),
            "endpoint": self.endpoint,
            "handler": self.handler_spec,
            "function_name": self.invoker.function_name,
            "failures_dir": str(self.invoker.failures_dir),
            **self.invoker.counts(),
            **({"inbox": self.inbox.health()} if self.inbox is not None else {}),
            "s3": {
                "endpoint": self.s3_endpoint,
                "handler": self.s3_handler_spec,
                "function_name": self.s3_invoker.function_name,
                **self.s3_invoker.counts(),
            },
        }


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; then drain pending invocations and exit."""
    local = LocalSettings()
    parser = argparse.ArgumentParser(prog="python -m feedlot_pipeline.local.lambda_bridge")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=local.lambda_port)
    parser.add_argument("--state-dir", type=Path, default=local.state_dir)
    parser.add_argument(
        "--handler", default=None, help=f"module:function (default {local.sns_handler})"
    )
    parser.add_argument("--drain-seconds", type=float, default=10.0)
    parser.add_argument(
        "--records-inbox", default=None, help="SQS queue of the records topic to poll (durable)"
    )
    args = parser.parse_args(argv)

    bridge = LambdaBridge(
        args.state_dir,
        args.port,
        host=args.host,
        handler=args.handler,
        records_inbox=args.records_inbox,
    )
    try:
        bridge.start()
    except OSError as err:
        print(
            f"lambda bridge: cannot listen on {args.host}:{args.port}: {err}; "
            "set FEEDLOT_LAMBDA_PORT",
            file=sys.stderr,
        )
        return 2
    wait_for_signal()
    bridge.stop(args.drain_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
