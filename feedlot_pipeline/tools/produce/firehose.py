"""The Firehose sink: one JSON line per record, PutRecordBatch within its limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from feedlot_pipeline.core.aws import client
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

FIREHOSE_MAX_RECORDS = 500  # PutRecordBatch limits
FIREHOSE_MAX_BATCH_BYTES = 4 * 1024 * 1024
FIREHOSE_MAX_RECORD_BYTES = 1000 * 1024


class FirehoseWriter:
    """Writes records as JSON lines with PutRecordBatch, retrying the entries Firehose fails."""

    def __init__(
        self,
        stream: str,
        *,
        rate: float = 0.0,
        bar: Any = None,
        run_id: str | None = None,
        firehose: Any = None,
        backoff: float = 0.2,
        retry_for: float = RETRY_FOR_SECONDS,
        say: Any = say_stderr,
    ) -> None:
        self.stream = stream
        self.pacer = Pacer(rate)
        self.bar = bar
        self.backoff = backoff
        self.result = PublishResult(run_id or uuid.uuid4().hex[:12], unit="batches")
        self.firehose = firehose or client("firehose")
        self._pending: list[bytes] = []
        self._size = 0
        self._call_failures = 0
        self.outage = Outage(self.result, "Firehose PutRecordBatch", retry_for, say=say)
        self._seen = False

    def publish_stream(self, items: Iterable[bytes | BadLine]) -> None:
        for item in items:
            if self.result.aborted:
                return
            if isinstance(item, BadLine):
                self.result.skip(item)
                self._tick(1)
                continue
            line = item + b"\n"
            if len(line) > FIREHOSE_MAX_RECORD_BYTES:
                self.result.failed_records += 1
                self.result.note(f"record of {len(line)} bytes exceeds Firehose's 1000 KiB")
                self._tick(1)
                continue
            if self._pending and (
                len(self._pending) >= FIREHOSE_MAX_RECORDS
                or self._size + len(line) > FIREHOSE_MAX_BATCH_BYTES
            ):
                self.flush()
            wait = self.pacer.delay()
            if wait > 0:
                self.flush()
                time.sleep(wait)
            self.pacer.sent(1)
            self._pending.append(line)
            self._size += len(line)

    def flush(self) -> None:
        """Send what is pending; retry failed entries, then report the ones that never went."""
        entries, self._pending, self._size = self._pending, [], 0
        attempt = 0
        while entries and not self.result.aborted:
            attempt += 1
            try:
                response = self.firehose.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": e} for e in entries]
                )
            except Exception as err:  # noqa: BLE001 - botocore already retried; report, go on
                retry, maybe_done = transient(err, seen=self._seen)
                delay = self.outage.failed(f"{type(err).__name__}: {err}") if retry else None
                if delay is None:
                    self._batch_failed(entries, f"{type(err).__name__}: {err}")
                    return
                attempt -= 1  # the same batch again: a call that failed is no entry attempt
                if maybe_done:
                    self.result.maybe_twice += 1
                time.sleep(delay)
                continue
            self.outage.recovered()
            self._seen = True
            self._call_failures = 0
            answers = response.get("RequestResponses", [])
            failed = [e for e, a in zip(entries, answers, strict=False) if a.get("ErrorCode")]
            failed += entries[len(answers) :]  # no answer at all: treat as failed
            done = len(entries) - len(failed)
            self.result.records += done
            self._tick(done)
            if done:
                self.result.messages += 1
            if failed and attempt < ENTRY_ATTEMPTS:
                self.result.retries += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            elif failed:
                codes = {a.get("ErrorCode") for a in answers if a.get("ErrorCode")}
                self.result.failed_records += len(failed)
                self.result.failed_messages += 1
                self.result.note(
                    f"{len(failed)} record(s) not accepted by Firehose after {attempt} "
                    f"attempt(s): {', '.join(sorted(c for c in codes if c)) or 'no answer'}"
                )
                self._tick(len(failed))
                failed = []
            entries = failed

    def _batch_failed(self, entries: list[bytes], reason: str) -> None:
        self.result.failed_messages += 1
        self.result.failed_records += len(entries)
        self.result.note(f"PutRecordBatch of {len(entries)} records failed: {reason}")
        self._tick(len(entries))
        self._call_failures += 1
        if self._call_failures >= CONSECUTIVE_CALL_FAILURES_TO_ABORT:
            self.result.aborted = (
                f"gave up after {self._call_failures} failed PutRecordBatch calls in a row "
                f"(last: {reason}); the rest of the input was not read"
            )

    def _tick(self, records: int) -> None:
        if self.bar is not None and records:
            self.bar.update(records)

    def close(self) -> PublishResult:
        self.flush()
        return self.result
