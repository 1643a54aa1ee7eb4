"""The SNS sink: envelopes of records, PublishBatch ten at a time, within 256 KiB."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.ingestion.landing import envelope
from feedlot_pipeline.tools.produce.common import (
    CONSECUTIVE_CALL_FAILURES_TO_ABORT,
    ENTRY_ATTEMPTS,
    RETRY_FOR_SECONDS,
    BadLine,
    Outage,
    Pacer,
    PublishResult,
    say_stderr,
    transient,
)

MAX_MESSAGE_BYTES = 262_144  # SNS: message plus attributes, and a PublishBatch in total
ATTRIBUTE_RESERVE = 512  # headroom for the message attributes of one entry
ENVELOPE_RESERVE = 128  # {"correlation_id": …, "records": […]} around the records
MAX_BODY_BYTES = MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE - ENVELOPE_RESERVE
BATCH_ENTRIES = 10  # PublishBatch limit


@dataclass
class _Entry:
    id: str
    body: bytes
    records: int
    correlation_id: str
    attempts: int = 0

    def request(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Message": self.body.decode(),
            "MessageAttributes": {
                "source": {"DataType": "String", "StringValue": "producer"},
                "correlation_id": {"DataType": "String", "StringValue": self.correlation_id},
            },
        }

    @property
    def size(self) -> int:
        return len(self.body) + ATTRIBUTE_RESERVE


class Publisher:
    """Builds messages from a record stream and sends them with PublishBatch, paced and retried."""

    def __init__(
        self,
        topic: str,
        *,
        batch_size: int = 100,
        rate: float = 0.0,
        bar: Any = None,
        run_id: str | None = None,
        sns: Any = None,
        retry_for: float = RETRY_FOR_SECONDS,
        say: Any = say_stderr,
    ) -> None:
        self.topic_arn = topic_arn(topic)
        # With a rate, a message carries at most about a second of records, so the stream is
        # smooth instead of one large burst per batch.
        self.batch_size = min(batch_size, max(1, math.ceil(rate))) if rate > 0 else batch_size
        self.pacer = Pacer(rate)
        self.bar = bar
        self.result = PublishResult(run_id or uuid.uuid4().hex[:12])
        self.sns = sns or client("sns")
        self._pending: list[_Entry] = []
        self._sequence = 0
        self._call_failures = 0
        self.outage = Outage(self.result, "SNS PublishBatch", retry_for, say=say)
        self._seen = False  # the topic answered once: a NotFound later is an outage

    # messages

    def publish_stream(self, items: Iterable[bytes | BadLine]) -> None:
        """Publish one source (a file, or the generator); messages never mix two sources."""
        records: list[bytes] = []
        size = 2  # "[" and "]"
        for item in items:
            if self.result.aborted:
                return
            if isinstance(item, BadLine):
                self.result.skip(item)
                self._tick(1)
                continue
            extra = len(item) + (1 if records else 0)
            if len(item) + 2 > MAX_BODY_BYTES:
                self.result.failed_records += 1
                self.result.note(f"record of {len(item)} bytes exceeds the SNS message limit")
                self._tick(1)
                continue
            if records and (len(records) >= self.batch_size or size + extra > MAX_BODY_BYTES):
                self._add_message(records)
                records, size, extra = [], 2, len(item)
            records.append(item)
            size += extra
        if records and not self.result.aborted:
            self._add_message(records)

    def _add_message(self, records: list[bytes]) -> None:
        self._sequence += 1
        correlation_id = f"{self.result.run_id}-{self._sequence:06d}"
        entry = _Entry(
            id=str(self._sequence),
            body=envelope(records, correlation_id),
            records=len(records),
            correlation_id=correlation_id,
        )
        wait = self.pacer.delay()
        if wait > 0:
            self.flush()  # what is due goes now; this message waits for its turn
            time.sleep(wait)
        self.pacer.sent(entry.records)
        pending_size = sum(e.size for e in self._pending)
        if self._pending and pending_size + entry.size > MAX_MESSAGE_BYTES:
            self.flush()
        self._pending.append(entry)
        if len(self._pending) >= BATCH_ENTRIES:
            self.flush()

    # batches

    def flush(self) -> None:
        """Send what is pending, retrying entries SNS fails; give up on them after a few tries."""
        entries, self._pending = self._pending, []
        while entries and not self.result.aborted:
            for entry in entries:
                entry.attempts += 1
            retry: list[_Entry] = []
            try:
                response = self.sns.publish_batch(
                    TopicArn=self.topic_arn,
                    PublishBatchRequestEntries=[e.request() for e in entries],
                )
            except Exception as err:  # noqa: BLE001 - botocore already retried; report, go on
                retry, maybe_done = transient(err, seen=self._seen)
                delay = self.outage.failed(f"{type(err).__name__}: {err}") if retry else None
                if delay is None:
                    self._call_failed(entries, err)
                    return
                for entry in entries:  # the same entries again; a call is no entry attempt
                    entry.attempts -= 1
                if maybe_done:
                    self.result.maybe_twice += len(entries)
                time.sleep(delay)
                continue
            self.outage.recovered()
            self._seen = True
            self._call_failures = 0
            ok = {s["Id"] for s in response.get("Successful", [])}
            failed = {f["Id"]: f for f in response.get("Failed", [])}
            for entry in entries:
                if entry.id in ok:
                    self.result.messages += 1
                    self.result.records += entry.records
                    self._tick(entry.records)
                    continue
                # Neither successful nor failed happens too (moto drops an entry whose delivery
                # raised): treat it as a failure that may be retried.
                failure = failed.get(entry.id, {"Code": "NoResult", "Message": "no result"})
                if not failure.get("SenderFault") and entry.attempts < ENTRY_ATTEMPTS:
                    retry.append(entry)
                else:
                    self._entry_failed(entry, f"{failure.get('Code')}: {failure.get('Message')}")
            if retry:
                time.sleep(0.2 * 2 ** (retry[0].attempts - 1))
            entries = retry

    def _tick(self, records: int) -> None:
        if self.bar is not None:
            self.bar.update(records)

    def _entry_failed(self, entry: _Entry, reason: str) -> None:
        self._tick(entry.records)
        self.result.failed_messages += 1
        self.result.failed_records += entry.records
        self.result.note(
            f"message {entry.correlation_id} ({entry.records} records) not published after "
            f"{entry.attempts} attempt(s): {reason}"
        )

    def _call_failed(self, entries: list[_Entry], err: Exception) -> None:
        reason = f"{type(err).__name__}: {err}"
        for entry in entries:
            self._entry_failed(entry, reason)
        self._call_failures += 1
        if self._call_failures >= CONSECUTIVE_CALL_FAILURES_TO_ABORT:
            self.result.aborted = (
                f"gave up after {self._call_failures} failed PublishBatch calls in a row "
                f"(last: {reason}); the rest of the input was not read"
            )

    def close(self) -> PublishResult:
        self.flush()
        return self.result
