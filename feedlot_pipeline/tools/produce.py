"""``feedlot produce``: send consumption records the way farms would: SNS, the HTTP API or Firehose.

Input is the original case's format (one JSON object per line, a day of one farm per file; a
missing final newline is fine) or synthetic records (``--generate N``). Records travel in batches:
each SNS message is an envelope ``{"correlation_id": …, "records": [up to --batch-size records]}``
(the id is a message attribute too; the body keeps it where attributes are dropped, as in moto's
HTTP delivery) and never exceeds SNS's 256 KiB limit, and messages go out ten at a time with
``PublishBatch`` (whose 256 KiB aggregate limit is respected too). Lines are streamed, so a file
of any size is published in constant memory.

A line that is not JSON cannot be put in a JSON array without changing it: it is skipped and
reported (file and line number). Entries SNS fails are retried, then reported; the command exits
non-zero when anything was not published.

Outages: a call that fails on a connection error, a 5xx or throttling (and, once the topic was
seen, a topic that vanished: a restarted moto before ``feedlot local up`` provisions it again) is
retried with the same entries, with backoff (0.5 s doubling to 10 s), for up to ``--retry-for``
seconds (120) since the first failure in a row; each outage and its recovery are printed, and the
summary counts retries. A batch SNS answered is never sent again; a call whose answer was lost
after it was sent (connection reset, read timeout) may have been published, so it is resent and
counted as ``maybe sent twice`` (the landing keys on the SNS message id, and a record delivered
twice is one row: the pipeline counts it as redelivered, not as a new record).

``--via api`` POSTs the same JSON arrays to ``$FEEDLOT_INGEST_API_URL/consumo`` (API key from
``FEEDLOT_INGEST_API_KEY`` or the SSM parameter ``FEEDLOT_INGEST_API_KEY_PARAMETER``) from
``--concurrency`` threads; a body never exceeds ``FEEDLOT_INGEST_API_MAX_BODY_BYTES``. 5xx, 429 and
connection errors are retried with exponential backoff under the same ``idempotency-key``, so a
retry lands nothing twice; other 4xx are reported at once. Records the API reports as rejected were
still landed (the warehouse files them with their reason) and are counted, not failed.

``--via firehose`` writes each record as one JSON line (ending in a newline, so the delivered S3
objects are JSON Lines) with ``PutRecordBatch``: at most 500 records and 4 MiB per call, entries
Firehose reports as failed are retried, to the stream ``FEEDLOT_FIREHOSE_STREAM``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click
import orjson

from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.landing import envelope

MAX_MESSAGE_BYTES = 262_144  # SNS: message plus attributes, and a PublishBatch in total
ATTRIBUTE_RESERVE = 512  # headroom for the message attributes of one entry
ENVELOPE_RESERVE = 128  # {"correlation_id": …, "records": […]} around the records
MAX_BODY_BYTES = MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE - ENVELOPE_RESERVE
BATCH_ENTRIES = 10  # PublishBatch limit
ENTRY_ATTEMPTS = 4  # first try plus retries of entries SNS reports as failed
CONSECUTIVE_CALL_FAILURES_TO_ABORT = 3
RETRY_FOR_SECONDS = 120.0  # how long an outage (connection errors, 5xx) is ridden out
THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded"}
)
KEPT_DETAILS = 50  # bad lines / errors listed in the summary


@dataclass
class BadLine:
    """A line that could not be published, and why."""

    origin: str  # "file:line"
    reason: str


@dataclass
class PublishResult:
    """What a publish run did; ``ok`` is False when anything was not published."""

    run_id: str
    records: int = 0
    messages: int = 0
    files: int = 0
    seconds: float = 0.0
    failed_records: int = 0
    failed_messages: int = 0
    bad_lines: int = 0
    details: list[str] = field(default_factory=list)
    aborted: str | None = None
    unit: str = "messages"  # what ``messages`` counts: SNS messages, API requests, batches
    rejected: int = 0  # records the API reported as rejected (landed anyway, not failures)
    retries: int = 0
    outages: int = 0  # stretches of failed calls that were ridden out (or not)
    outage_seconds: float = 0.0  # the longest of them
    maybe_twice: int = 0  # messages resent after a lost answer: may have been published twice
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds per API request

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def failures(self) -> int:
        """Records not published: failed publishes plus lines that could not be sent."""
        return self.failed_records + self.bad_lines

    @property
    def ok(self) -> bool:
        return self.failures == 0 and self.aborted is None

    def skip(self, bad: BadLine) -> None:
        """A line that is not a record: counted and named in the summary, never published."""
        self.bad_lines += 1
        self.note(f"{bad.origin}: skipped, {bad.reason}")

    def note(self, text: str) -> None:
        if len(self.details) < KEPT_DETAILS:
            self.details.append(text)
        elif len(self.details) == KEPT_DETAILS:
            self.details.append("… (further problems not listed)")

    def summary(self) -> str:
        text = (
            f"records {self.records}, {self.unit} {self.messages}, files {self.files}, "
            f"seconds {self.seconds:.2f}, records/s {self.records_per_second:.0f}, "
            f"failures {self.failures}"
        )
        if self.retries:
            text += f", retries {self.retries}"
        if self.outages:
            text += f", outages {self.outages} (longest {self.outage_seconds:.1f} s)"
        if self.maybe_twice:
            text += f", maybe sent twice {self.maybe_twice} (answer lost; counted as redelivered)"
        if self.unit == "requests":
            text += f", rejected by the API {self.rejected} (landed, filed with their reason)"
        return text


# --- input ---------------------------------------------------------------------------------------


def _validate(text: bytes, origin: str) -> bytes | BadLine:
    """The line as sent, if it parses the way the Lambda will parse it (orjson)."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as err:
        return BadLine(origin, f"not valid JSON ({err.msg})")
    return text


def iter_file(path: Path | str) -> Iterator[bytes | BadLine]:
    """Records of one JSON Lines file (``-`` for stdin), streamed; blank lines are skipped."""
    name = str(path)
    if name == "-":
        yield from _iter_lines(sys.stdin.buffer, "stdin")
        return
    with open(path, "rb") as handle:
        yield from _iter_lines(handle, name)


def _iter_lines(handle: BinaryIO, name: str) -> Iterator[bytes | BadLine]:
    for number, raw in enumerate(handle, start=1):
        line = raw.strip()
        if line:
            yield _validate(line, f"{name}:{number}")


def iter_generated(n: int, seed: int) -> Iterator[bytes]:
    """``n`` synthetic records from ``feedlot_pipeline.tools.synthetic`` as JSON."""
    from feedlot_pipeline.tools.synthetic import generate

    for record in generate(n, seed=seed):
        yield orjson.dumps(record)


def count_lines(path: Path | str) -> int:
    """Lines in a file without holding it in memory (for the progress bar's total)."""
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


# --- outages -------------------------------------------------------------------------------------


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Outage:
    """Rides out a stretch of failed calls: backoff until ``retry_for`` seconds have passed since
    the first failure in a row; says when an outage starts and ends. Thread-safe."""

    def __init__(
        self,
        result: PublishResult,
        what: str,
        retry_for: float = RETRY_FOR_SECONDS,
        *,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        say: Any = _stderr,
    ) -> None:
        self.result = result
        self.what = what
        self.retry_for = retry_for
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.say = say
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    def failed(self, reason: str) -> float | None:
        """Seconds to wait before the next try, or None: the window is spent (give up)."""
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since, self._failures = now, 0
                self.result.outages += 1
                self.say(
                    f"  {self.what} failing ({reason}); retrying for up to {self.retry_for:.0f} s"
                )
            self._failures += 1
            spent = now - self._since
            self.result.outage_seconds = max(self.result.outage_seconds, spent)
            if spent >= self.retry_for:
                return None
            self.result.retries += 1
            delay = min(self.max_backoff, self.backoff * 2 ** (self._failures - 1))
            return min(delay, max(0.0, self.retry_for - spent) + 0.01)

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            spent = time.monotonic() - self._since
            self.result.outage_seconds = max(self.result.outage_seconds, spent)
            self.say(
                f"  {self.what} back after {spent:.1f} s ({self._failures} failed call(s) retried)"
            )
            self._since = None


def transient(err: Exception, *, seen: bool = False) -> tuple[bool, bool]:
    """(retry?, maybe done?) for a failed AWS call.

    Retried: connection errors, 5xx, throttling; with ``seen`` (the resource answered before in
    this run) also NotFound: a restarted local moto has not provisioned it again yet. ``maybe
    done`` when the request may have reached the service before the failure (lost answer).
    """
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.parsers import ResponseParserError

    if isinstance(err, BotoConnectionError):  # could not connect: nothing was sent
        return True, False
    if isinstance(err, (HTTPClientError, ResponseParserError)):  # sent; the answer was lost
        return True, True
    if isinstance(err, ClientError):
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(err.response.get("Error", {}).get("Code", ""))
        if status >= 500 or code in THROTTLING:
            return True, status >= 500
        if seen and code in ("NotFound", "NotFoundException", "ResourceNotFoundException"):
            return True, False
    return False, False


# --- publishing ----------------------------------------------------------------------------------


class _Pacer:
    """Records-per-second limit: a message may leave once the records before it are due."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start: float | None = None
        self.released = 0

    def delay(self) -> float:
        """Seconds to wait before the next message may leave (0 when unlimited or due)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.released / self.rate
        return max(0.0, due - now)

    def sent(self, records: int) -> None:
        self.released += records


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
        say: Any = _stderr,
    ) -> None:
        self.topic_arn = topic_arn(topic)
        # With a rate, a message carries at most about a second of records, so the stream is
        # smooth instead of one large burst per batch.
        self.batch_size = min(batch_size, max(1, math.ceil(rate))) if rate > 0 else batch_size
        self.pacer = _Pacer(rate)
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


# --- HTTP API ------------------------------------------------------------------------------------

API_ATTEMPTS = 5  # first try plus retries of a request that got 5xx/429/connection errors
API_TIMEOUT_SECONDS = 30.0
DEFAULT_CONCURRENCY = 4


def _json_arrays(
    items: Iterable[bytes | BadLine],
    result: PublishResult,
    tick: Any,
    batch_size: int,
    max_bytes: int,
) -> Iterator[tuple[bytes, int]]:
    """JSON arrays of at most ``batch_size`` records and ``max_bytes`` bytes, with their counts."""
    records: list[bytes] = []
    size = 2
    for item in items:
        if result.aborted:
            return
        if isinstance(item, BadLine):
            result.skip(item)
            tick(1)
            continue
        if len(item) + 2 > max_bytes:
            result.failed_records += 1
            result.note(f"record of {len(item)} bytes exceeds the {max_bytes}-byte body limit")
            tick(1)
            continue
        extra = len(item) + (1 if records else 0)
        if records and (len(records) >= batch_size or size + extra > max_bytes):
            yield b"[" + b",".join(records) + b"]", len(records)
            records, size, extra = [], 2, len(item)
        records.append(item)
        size += extra
    if records and not result.aborted:
        yield b"[" + b",".join(records) + b"]", len(records)


class ApiPoster:
    """POSTs JSON arrays to ``<url>/consumo`` from a thread pool, paced, retried, idempotent."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        batch_size: int = 100,
        rate: float = 0.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        bar: Any = None,
        run_id: str | None = None,
        max_body: int | None = None,
        timeout: float = API_TIMEOUT_SECONDS,
        attempts: int = API_ATTEMPTS,
        backoff: float = 0.2,
        retry_for: float = RETRY_FOR_SECONDS,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.endpoint = url.rstrip("/") + "/consumo"
        self.api_key = api_key
        self.batch_size = min(batch_size, max(1, math.ceil(rate))) if rate > 0 else batch_size
        self.max_body = max_body or Settings().ingest_api_max_body_bytes
        self.pacer = _Pacer(rate)
        self.bar = bar
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.retry_for = retry_for
        self.result = PublishResult(run_id or uuid.uuid4().hex[:12], unit="requests")
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="produce-api")
        self._slots = threading.BoundedSemaphore(2 * max(1, concurrency))  # bounded memory
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sequence = 0
        self._call_failures = 0

    def publish_stream(self, items: Iterable[bytes | BadLine]) -> None:
        """POST one source's records; requests never mix two sources."""
        for body, count in _json_arrays(
            items, self.result, self._tick, self.batch_size, self.max_body
        ):
            wait = self.pacer.delay()
            if wait > 0:
                time.sleep(wait)
            self.pacer.sent(count)
            self._slots.acquire()
            if self.result.aborted:
                self._slots.release()
                return
            self._sequence += 1
            future = self._pool.submit(self._post, body, count, self._sequence)
            future.add_done_callback(lambda _f: self._slots.release())

    def _session(self) -> Any:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"x-api-key": self.api_key, "Content-Type": "application/json"})
            self._local.session = session
        return session

    def _post(self, body: bytes, count: int, sequence: int) -> None:
        import requests

        correlation_id = f"{self.result.run_id}-{sequence:06d}"
        headers = {"x-correlation-id": correlation_id, "idempotency-key": correlation_id}
        reason = ""
        attempt = 0
        first_failure: float | None = None
        while True:
            attempt += 1
            if attempt > 1:
                with self._lock:
                    self.result.retries += 1
                time.sleep(min(10.0, self.backoff * 2 ** (attempt - 2)))
            started = time.perf_counter()
            try:
                response = self._session().post(
                    self.endpoint, data=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as err:
                reason, retry = f"{type(err).__name__}: {err}", True
            else:
                elapsed = time.perf_counter() - started
                if response.status_code == 202:
                    self._succeeded(response, count, elapsed)
                    return
                reason = f"HTTP {response.status_code}: {_message(response)}"
                retry = response.status_code >= 500 or response.status_code == 429
            # Retried (same idempotency key: lands nothing twice) at least ``attempts`` times,
            # and for as long as the outage is shorter than ``retry_for``.
            first_failure = first_failure or time.monotonic()
            within = time.monotonic() - first_failure < self.retry_for
            if not retry or (attempt >= self.attempts and not within):
                break
        self._failed(correlation_id, count, attempt, reason)

    def _succeeded(self, response: Any, count: int, elapsed: float) -> None:
        try:
            rejected = int(response.json().get("rejected", 0))
        except ValueError:
            rejected = 0
        with self._lock:
            self._call_failures = 0
            self.result.messages += 1
            self.result.records += count
            self.result.rejected += rejected
            self.result.latencies.append(elapsed)
        self._tick(count)

    def _failed(self, correlation_id: str, count: int, attempts: int, reason: str) -> None:
        with self._lock:
            self.result.failed_messages += 1
            self.result.failed_records += count
            self.result.note(
                f"request {correlation_id} ({count} records) not accepted after {attempts} "
                f"attempt(s): {reason}"
            )
            self._call_failures += 1
            if (
                self._call_failures >= CONSECUTIVE_CALL_FAILURES_TO_ABORT
                and not self.result.aborted
            ):
                self.result.aborted = (
                    f"gave up after {self._call_failures} failed requests in a row "
                    f"(last: {reason}); the rest of the input was not read"
                )
        self._tick(count)

    def _tick(self, records: int) -> None:
        if self.bar is not None:
            with self._lock:
                self.bar.update(records)

    def close(self) -> PublishResult:
        self._pool.shutdown(wait=True)
        return self.result


def _message(response: Any) -> str:
    try:
        body = response.json()
        text = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        text = None
    return str(text or response.text[:200] or response.reason)


# --- Firehose ------------------------------------------------------------------------------------

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
        say: Any = _stderr,
    ) -> None:
        self.stream = stream
        self.pacer = _Pacer(rate)
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


def api_target(url: str | None = None) -> tuple[str, str]:
    """(API base URL, API key) from the options and settings; ClickException when missing."""
    from feedlot_pipeline.local.api_gateway import resolve_api_key
    from feedlot_pipeline.local.services import ServiceError

    url = url or Settings().ingest_api_url
    if not url:
        raise click.ClickException(
            "FEEDLOT_INGEST_API_URL is not set (local stack: feedlot local up, then "
            'eval "$(feedlot local env)")'
        )
    try:
        return url, resolve_api_key()
    except ServiceError as err:
        raise click.ClickException(str(err)) from None


def _progress_bar(enabled: bool | None, total: int | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", unit_scale=True, desc="publishing", file=sys.stderr)


def _sink(
    via: str,
    *,
    topic: str | None,
    batch_size: int,
    rate: float,
    bar: Any,
    url: str | None,
    api_key: str | None,
    concurrency: int,
    stream: str | None,
    retry_for: float = RETRY_FOR_SECONDS,
) -> Publisher | ApiPoster | FirehoseWriter:
    if via == "api":
        if not (url and api_key):
            url, api_key = api_target(url)
        return ApiPoster(
            url,
            api_key,
            batch_size=batch_size,
            rate=rate,
            concurrency=concurrency,
            bar=bar,
            retry_for=retry_for,
        )
    if via == "firehose":
        stream = stream or Settings().firehose_stream
        return FirehoseWriter(stream, rate=rate, bar=bar, retry_for=retry_for)
    if via != "sns":
        raise ValueError(f"unknown --via {via!r}: sns, api or firehose")
    topic = topic or Settings().records_topic
    return Publisher(topic, batch_size=batch_size, rate=rate, bar=bar, retry_for=retry_for)


def _publish(
    sources: list[tuple[str, Iterable[bytes | BadLine]]],
    *,
    total: int | None,
    topic: str | None,
    batch_size: int,
    rate: float,
    progress: bool | None,
    via: str = "sns",
    url: str | None = None,
    api_key: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    stream: str | None = None,
    retry_for: float = RETRY_FOR_SECONDS,
) -> PublishResult:
    started = time.monotonic()
    bar = _progress_bar(progress, total)
    try:
        publisher = _sink(
            via,
            topic=topic,
            batch_size=batch_size,
            rate=rate,
            bar=bar,
            url=url,
            api_key=api_key,
            concurrency=concurrency,
            stream=stream,
            retry_for=retry_for,
        )
        for kind, items in sources:
            if publisher.result.aborted:
                break
            if kind == "file":
                publisher.result.files += 1
            publisher.publish_stream(items)
        result = publisher.close()
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.monotonic() - started
    return result


def publish_files(
    paths: Iterable[Path | str],
    *,
    topic: str | None = None,
    batch_size: int = 100,
    rate: float = 0.0,
    progress: bool | None = None,
    **via: Any,
) -> PublishResult:
    """Publish JSON Lines files (``-`` is stdin) to the records topic (default from settings).

    ``via`` options (``via="api"|"firehose"``, ``url``, ``api_key``, ``concurrency``, ``stream``)
    choose another way in; ``retry_for`` is how long an outage is ridden out (seconds).
    """
    paths = list(paths)
    total = None
    if progress or (progress is None and sys.stderr.isatty()):
        total = sum(count_lines(p) for p in paths if str(p) != "-")
    return _publish(
        [("file", iter_file(p)) for p in paths],
        total=total,
        topic=topic,
        batch_size=batch_size,
        rate=rate,
        progress=progress,
        **via,
    )


def publish_generated(
    n: int,
    *,
    seed: int = 7,
    topic: str | None = None,
    batch_size: int = 100,
    rate: float = 0.0,
    progress: bool | None = None,
    **via: Any,
) -> PublishResult:
    """Publish ``n`` synthetic records (``feedlot_pipeline.tools.synthetic.generate``)."""
    return _publish(
        [("generated", iter_generated(n, seed))],
        total=n,
        topic=topic,
        batch_size=batch_size,
        rate=rate,
        progress=progress,
        **via,
    )


@click.command()
@click.argument(
    "files",
    nargs=-1,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option("--generate", "generate_n", type=click.IntRange(min=1), help="Synthetic records.")
@click.option("--seed", default=7, show_default=True, help="Seed of --generate.")
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Most records per SNS message (capped by 256 KiB) or API request (capped by "
    "FEEDLOT_INGEST_API_MAX_BODY_BYTES); Firehose batches are always up to 500 records / 4 MiB.",
)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Records per second; 0 = as fast as possible.",
)
@click.option("--topic", default=None, help="Topic name or ARN [default: FEEDLOT_RECORDS_TOPIC].")
@click.option(
    "--via",
    type=click.Choice(["sns", "api", "firehose"]),
    default="sns",
    show_default=True,
    help="sns: the records topic; api: POST $FEEDLOT_INGEST_API_URL/consumo with "
    "$FEEDLOT_INGEST_API_KEY; firehose: PutRecordBatch to the delivery stream.",
)
@click.option(
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Concurrent requests with --via api.",
)
@click.option(
    "--url", default=None, help="API base URL [default: FEEDLOT_INGEST_API_URL] (--via api)."
)
@click.option(
    "--stream", default=None, help="Delivery stream [default: FEEDLOT_FIREHOSE_STREAM] (firehose)."
)
@click.option(
    "--retry-for",
    default=RETRY_FOR_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep retrying through an outage (connection errors, 5xx, throttling) "
    "before giving up on a batch.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a tty].")
def produce(
    files: tuple[Path, ...],
    generate_n: int | None,
    seed: int,
    batch_size: int,
    rate: float,
    topic: str | None,
    via: str,
    concurrency: int,
    url: str | None,
    stream: str | None,
    retry_for: float,
    progress: bool | None,
) -> None:
    """Send consumption records from FILE... (JSON Lines; - for stdin) or --generate N."""
    if bool(files) == bool(generate_n):
        raise click.UsageError("give FILE... or --generate N (one of the two)")
    from botocore.exceptions import BotoCoreError, ClientError

    options: dict[str, Any] = {
        "topic": topic,
        "batch_size": batch_size,
        "rate": rate,
        "progress": progress,
        "retry_for": retry_for,
    }
    if via != "sns":
        options |= {"via": via, "concurrency": concurrency, "url": url, "stream": stream}
    if via == "api":
        options["url"], options["api_key"] = api_target(url)
    try:
        if generate_n:
            result = publish_generated(generate_n, seed=seed, **options)
        else:
            result = publish_files(files, **options)
    except (BotoCoreError, ClientError) as err:  # before anything was sent: no topic ARN
        where = Settings().aws_endpoint_url or "AWS"
        service = {"sns": "SNS", "firehose": "Firehose"}.get(via, via)
        raise click.ClickException(
            f"cannot reach {service} at {where}: {err} (local stack: feedlot local up, then "
            'eval "$(feedlot local env)")'
        ) from None
    for line in result.details:
        click.echo(f"  {line}", err=True)
    if result.aborted:
        click.echo(f"  {result.aborted}", err=True)
    click.echo(f"Published (run {result.run_id}): {result.summary()}")
    if not result.ok:
        sys.exit(1)
