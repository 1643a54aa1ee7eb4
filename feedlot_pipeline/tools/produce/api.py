"""The HTTP API sink: JSON arrays POSTed to ``<url>/consumo`` from a thread pool."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import click

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.tools.produce.common import (
    CONSECUTIVE_CALL_FAILURES_TO_ABORT,
    RETRY_FOR_SECONDS,
    BadLine,
    Pacer,
    PublishResult,
)

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
        self.pacer = Pacer(rate)
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
