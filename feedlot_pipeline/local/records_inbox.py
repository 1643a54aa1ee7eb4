"""The Lambda bridge's durable way in: it polls the records topic's inbox queue.

moto's SNS delivers to an ``http`` subscription once, inside Publish: with the bridge down the
publish fails, and an event the bridge accepted but had not finished when it was killed was gone.
AWS keeps an asynchronously invoked event in its own queue until the function succeeded or the
event reached its on-failure destination. Locally that queue is ``FEEDLOT_RECORDS_INBOX``, an SQS
queue subscribed to the records topic (kept across moto restarts by the lake journal): this
poller receives the SNS envelopes, hands each to the invoker as the SNS event Lambda would get,
extends the message's visibility while the invocation is pending (so a killed bridge's messages
come back within one visibility timeout, and a live one's never do) and deletes it only once the
invocation succeeded or was parked with its reason (failure record + failure document). Settled
messages are deleted ten at a time (``DeleteMessageBatch``, at most ``FLUSH_SECONDS`` after they
settled): one request per message was a sixth of the local SQS traffic of a record.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

VISIBILITY_SECONDS = 30
HEARTBEAT_SECONDS = 10.0
WAIT_SECONDS = 1  # long poll
MAX_BACKOFF_SECONDS = 5.0
FLUSH_SECONDS = 0.2  # a settled message waits at most this long for its batched delete
SQS_BATCH = 10


class RecordsInbox:
    """A thread that feeds ``submit(envelope, on_done)`` from the inbox queue, with backpressure."""

    def __init__(
        self,
        queue_name: str,
        submit: Callable[[dict, Callable[[bool], None]], None],
        pending: Callable[[], int],
        log: logging.Logger,
        *,
        max_pending: int = 32,
    ) -> None:
        self.queue_name = queue_name
        self.submit = submit
        self.pending = pending
        self.log = log
        self.max_pending = max_pending
        self.counts = {
            "received": 0,
            "deleted": 0,
            "delete_failed": 0,
            "kept": 0,
            "poll_errors": 0,
            "bad": 0,
        }
        self._held: dict[str, str] = {}  # message id -> receipt handle, while invoking
        self._settled: list[str] = []  # receipts of settled messages, not yet deleted
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._last_beat = time.monotonic()

    # --- life ---------------------------------------------------------------------------------

    def start(self) -> RecordsInbox:
        self._thread = threading.Thread(target=self._run, name="records-inbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT_SECONDS + 5)
        try:
            self._flush(force=True)
        except Exception as err:  # noqa: BLE001 - undeleted: redelivered, landed once (put-once)
            self.log.warning(
                "records inbox: settled messages not deleted at stop",
                extra={"fields": {"error": f"{type(err).__name__}: {err}"[:300]}},
            )

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"queue": self.queue_name, "held": len(self._held), **self.counts}

    # --- loop ---------------------------------------------------------------------------------

    def _sqs(self) -> Any:
        from feedlot_pipeline.core.aws import client

        return client("sqs")

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._heartbeat()
                self._flush()
                if self.pending() >= self.max_pending:
                    self._stop.wait(0.1)
                    continue
                self._poll()
                backoff = 0.5
            except Exception as err:  # noqa: BLE001 - moto down or restarting: wait, go on
                with self._lock:
                    self.counts["poll_errors"] += 1
                self._url = None  # a restarted moto may have made the queue again
                self.log.warning(
                    "records inbox poll failed, retrying",
                    extra={"fields": {"error": f"{type(err).__name__}: {err}"[:300]}},
                )
                self._stop.wait(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    def _queue_url(self) -> str:
        if self._url is None:
            self._url = self._sqs().get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def _poll(self) -> None:
        url = self._queue_url()
        room = max(1, min(10, self.max_pending - self.pending()))
        messages = (
            self._sqs()
            .receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=room,
                WaitTimeSeconds=WAIT_SECONDS,
                VisibilityTimeout=VISIBILITY_SECONDS,
            )
            .get("Messages", [])
        )
        for message in messages:
            self._take(message)

    def _take(self, message: dict) -> None:
        try:
            envelope = json.loads(message["Body"])
            ok = isinstance(envelope, dict) and all(
                isinstance(envelope.get(k), str) for k in ("MessageId", "TopicArn", "Message")
            )
        except (json.JSONDecodeError, TypeError):
            ok = False
        if not ok:
            # Not an SNS envelope: leave it; after maxReceiveCount it reaches the inbox's DLQ.
            with self._lock:
                self.counts["bad"] += 1
            self.log.warning(
                "records inbox message is not an SNS notification",
                extra={"fields": {"sqs_message_id": message.get("MessageId")}},
            )
            return
        key = message["MessageId"] + ":" + uuid.uuid4().hex[:6]
        with self._lock:
            self.counts["received"] += 1
            self._held[key] = message["ReceiptHandle"]

        def done(forget: bool) -> None:
            with self._lock:
                receipt = self._held.pop(key, None)
            if receipt is None:
                return
            if not forget:  # the bridge stopped first: let the queue deliver it again
                with self._lock:
                    self.counts["kept"] += 1
                return
            with self._lock:
                self._settled.append(receipt)

        self.submit(envelope, done)

    def _flush(self, force: bool = False) -> None:
        """Delete settled messages, ten per request, once ten wait or ``FLUSH_SECONDS`` passed.

        A receipt that failed to delete is dropped: its message comes back after the visibility
        timeout and lands again as the same object (the landing writes once per event).
        """
        with self._lock:
            due = force or len(self._settled) >= SQS_BATCH
            due = due or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            if not due or not self._settled or self._url is None:
                return
            receipts, self._settled = self._settled, []
            self._last_flush = time.monotonic()
        sqs = self._sqs()
        for start in range(0, len(receipts), SQS_BATCH):
            chunk = receipts[start : start + SQS_BATCH]
            try:
                failed = sqs.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)],
                ).get("Failed", [])
            except Exception:
                with self._lock:  # moto down: keep the rest for the next flush
                    self._settled[:0] = receipts[start:]
                raise
            with self._lock:
                self.counts["deleted"] += len(chunk) - len(failed)
                self.counts["delete_failed"] += len(failed)
            if failed:  # redelivered later and landed once more as the same object: say why
                self.log.warning(
                    "records inbox: settled messages not deleted",
                    extra={"fields": {"failed": [f.get("Code") for f in failed][:10]}},
                )

    def _heartbeat(self) -> None:
        """Keep pending messages invisible while their invocation runs or waits for a retry."""
        if time.monotonic() - self._last_beat < HEARTBEAT_SECONDS:
            return
        self._last_beat = time.monotonic()
        with self._lock:
            held = list(self._held.items())
        if not held or self._url is None:
            return
        sqs = self._sqs()
        for start in range(0, len(held), 10):
            chunk = held[start : start + 10]
            sqs.change_message_visibility_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": VISIBILITY_SECONDS}
                    for i, (_, r) in enumerate(chunk)
                ],
            )
