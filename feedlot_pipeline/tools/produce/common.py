"""Shared by every sink: input reading, the publish result, outage retries, pacing."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

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


def say_stderr(text: str) -> None:
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
        say: Any = say_stderr,
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


# --- pacing -------------------------------------------------------------------------------------


class Pacer:
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
