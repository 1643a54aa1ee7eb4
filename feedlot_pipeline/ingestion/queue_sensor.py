"""The protocol every SQS-draining sensor follows, written once.

A Dagster sensor's results (run requests, asset events, cursor) are stored by the daemon after the
sensor function returns, so a message may be deleted only on a later tick, once its run is
recorded. Per tick:

1. ``acknowledge(recorded)``: delete the messages whose run an earlier tick recorded. A receipt
   that has gone stale meanwhile (the message became visible again and may be in flight
   elsewhere) is skipped, not an error: the message reappears and is recognised as seen.
2. ``drain()``: receive up to ``max_messages``, within ``budget_seconds`` so a tick stays far
   below Dagster's 60 s deadline whatever the backlog.
3. per message: ``hold(msg, run_key)`` until its run is recorded, ``ack_now(msg)`` when it needs
   no run (a redelivery), or ``park(msg, reason)`` when no sensor can use it: the dead-letter queue
   with its reason and a failure document. A message received ``park_after_receives`` times
   without ever being acknowledged is parked with that reason before SQS's own redrive would move
   it without one.

Crash anywhere: a message not yet deleted reappears after its visibility timeout, so nothing is
lost; deleted only after its run is recorded, so nothing is requested twice by this protocol.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.failures import report_failure
from feedlot_pipeline.core.lake import parse_raw_key

PENDING_MAX_AGE_SECONDS = 25  # below the queues' 30 s visibility timeout
# Below the queues' maxReceiveCount (10 in deploy/ and locally), so a message that keeps coming
# back is parked here with its reason before SQS's redrive moves it without one.
PARK_AFTER_RECEIVES = 8
SQS_BATCH = 10
DRAIN_RECEIVERS = 4  # concurrent ReceiveMessage calls while draining
STALE_CODES = ("ReceiptHandleIsInvalid", "InvalidParameterValue")


@dataclass(frozen=True)
class QueueMessage:
    """One received message: what the sensor needs of the SQS message."""

    message_id: str
    body: str
    receipt: str
    receive_count: int


@dataclass
class TickCounts:
    received: int = 0
    acknowledged: int = 0
    stale: int = 0
    parked: int = 0
    redelivered: int = 0

    def summary(self) -> str:
        return (
            f"{self.received} received, {self.acknowledged} acknowledged"
            f" ({self.stale} stale receipt(s) skipped), {self.parked} to DLQ,"
            f" {self.redelivered} redelivered"
        )


@dataclass
class QueueTick:
    """One tick's view of a queue, its dead-letter queue and the cursor of pending receipts."""

    queue_url: str
    dlq: str
    dlq_url: str
    stage: str
    cursor: str | None
    max_messages: int = 200
    budget_seconds: float = 15.0
    park_after_receives: int = PARK_AFTER_RECEIVES
    counts: TickCounts = field(default_factory=TickCounts)

    def __post_init__(self) -> None:
        self.sqs = client("sqs")
        try:
            loaded = json.loads(self.cursor) if self.cursor else {}
        except ValueError:
            loaded = {}
        self._pending: list[dict[str, Any]] = list(loaded.get("pending", []))
        self._keep: list[dict[str, Any]] = []
        self._started = time.monotonic()

    # --- 1. acknowledge ------------------------------------------------------------------------

    def acknowledge(self, recorded: Callable[[str], bool]) -> int:
        """Delete held messages whose run is recorded; keep the young others; drop the old."""
        known: dict[str, bool] = {}
        done: list[str] = []
        now = time.time()
        for item in self._pending:
            key = item["run_key"]
            if key not in known:
                known[key] = recorded(key)
            if known[key]:
                done.append(item["receipt"])
            elif now - item["at"] < PENDING_MAX_AGE_SECONDS:
                self._keep.append(item)
            # else: the receipt is stale; the message reappears and is handled as seen before.
        self._pending = []
        self._delete(done)
        return len(done)

    def _delete(self, receipts: Iterable[str]) -> None:
        receipts = list(receipts)
        for start in range(0, len(receipts), SQS_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": r}
                for i, r in enumerate(receipts[start : start + SQS_BATCH])
            ]
            failed = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries).get(
                "Failed", []
            )
            stale = [f for f in failed if f.get("Code") in STALE_CODES]
            other = [f for f in failed if f.get("Code") not in STALE_CODES]
            if other:
                raise RuntimeError(f"could not delete messages from {self.queue_url}: {other}")
            self.counts.stale += len(stale)
            self.counts.acknowledged += len(entries) - len(failed)

    # --- 2. drain ------------------------------------------------------------------------------

    def drain(self) -> list[QueueMessage]:
        """Up to ``max_messages`` messages, stopping early when the tick's time budget is spent.

        ``DRAIN_RECEIVERS`` receive at once (SQS answers at most 10 a call): one after the other,
        a backlog of 2,000 notices took 18 s of a tick on a busy local stack.
        """
        lock = threading.Lock()
        received: list[dict] = []
        asked = [0]  # messages asked for by the receivers, answered or not yet

        def receiver() -> None:
            while not self.out_of_time():
                with lock:
                    take = min(SQS_BATCH, self.max_messages - asked[0])
                    asked[0] += max(0, take)
                if take <= 0:
                    return
                batch = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=take,
                    WaitTimeSeconds=0,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                with lock:
                    received.extend(batch)
                    asked[0] -= take - len(batch)
                if not batch:
                    return

        receivers = max(1, min(DRAIN_RECEIVERS, -(-self.max_messages // SQS_BATCH)))
        with ThreadPoolExecutor(receivers, thread_name_prefix="sqs-drain") as pool:
            for future in [pool.submit(receiver) for _ in range(receivers)]:
                future.result()
        out: list[QueueMessage] = []
        for m in received:
            count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            msg = QueueMessage(m["MessageId"], m.get("Body", ""), m["ReceiptHandle"], count)
            if count >= self.park_after_receives:
                self.park(
                    msg,
                    f"received {count} times without being acknowledged (its run was never "
                    "recorded); parked with this reason before SQS's redrive moves it blind",
                )
                continue
            out.append(msg)
        self.counts.received += len(out)
        return out

    def out_of_time(self) -> bool:
        return time.monotonic() - self._started > self.budget_seconds

    # --- 3. verdicts per message ---------------------------------------------------------------

    def hold(self, msg: QueueMessage, run_key: str) -> None:
        """Keep the message until a later tick sees ``run_key`` recorded."""
        self._keep.append({"receipt": msg.receipt, "run_key": run_key, "at": time.time()})

    def ack_now(self, messages: Iterable[QueueMessage]) -> None:
        """Delete messages that need no run (seen before)."""
        messages = list(messages)
        self.counts.redelivered += len(messages)
        self._delete(m.receipt for m in messages)

    def park(self, msg: QueueMessage, reason: str) -> None:
        """To the DLQ with its reason, off the queue, and reported on the failure topic.

        Sent before it is deleted, so a crash in between leaves it in both places, never in
        neither; ``report_failure`` never raises.
        """
        park_message(self.sqs, self.queue_url, self.dlq, self.dlq_url, msg, reason, self.stage)
        self.counts.parked += 1

    def next_cursor(self) -> str:
        return json.dumps({"pending": self._keep})


def send_dead_letter(
    sqs: Any, dlq_url: str, body: str, reason: str, stage: str, original_id: str
) -> None:
    """A dead letter as every DLQ reader here expects it: the body, and why, where and what from
    in the ``reason``/``stage``/``original_message_id`` attributes (``feedlot dlq`` shows them)."""
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=body or "<empty>",
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": reason[:1000] or "-"},
            "stage": {"DataType": "String", "StringValue": stage},
            "original_message_id": {"DataType": "String", "StringValue": original_id},
        },
    )


def park_message(
    sqs: Any, queue_url: str, dlq: str, dlq_url: str, msg: QueueMessage, reason: str, stage: str
) -> None:
    """The one way a message is parked: DLQ (with reason/stage attributes), delete, report."""
    send_dead_letter(sqs, dlq_url, msg.body, reason, stage, msg.message_id)
    try:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg.receipt)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in STALE_CODES:
            raise
        # stale: it reappears and is parked again (a duplicate in the DLQ, never a loss)
    report_failure(
        source="sensor",
        stage=stage,
        reason=reason,
        payload=msg.body,
        event_id=msg.message_id,
        details={"dead_letter_queue": dlq, "receive_count": msg.receive_count},
    )


def park_gone_objects(
    dlq: str, dlq_url: str, bucket: str, keys: Iterable[str], stage: str, run_id: str
) -> int:
    """Park the notices of noticed objects a batch run found gone: the DLQ and the failure topic.

    The sensor does not look for the object (one HEAD per notice); the run reads it anyway. Its
    notice is already acknowledged by then, so the run files a notice of its own for each key, a
    valid ``raw_landing`` one: ``feedlot dlq redrive`` after the object is restored loads it.
    """
    sqs = client("sqs")
    parked = 0
    for key in keys:
        fazenda, dia = parse_raw_key(key)
        body = LandingNotice(
            bucket=bucket,
            key=key,
            fazenda=fazenda,
            dia=dia.isoformat(),
            records=0,
            source="batch-run",
            event_id=key.rsplit("/", 1)[-1],
            landed_at=datetime.now(timezone.utc).isoformat(),
        ).to_json()
        reason = f"object s3://{bucket}/{key} does not exist in the lake (batch run {run_id})"
        send_dead_letter(sqs, dlq_url, body, reason, stage, run_id)
        report_failure(
            source="batch-run",
            stage=stage,
            reason=reason,
            payload=body,
            event_id=key,
            details={"dead_letter_queue": dlq, "run_id": run_id},
        )
        parked += 1
    return parked
