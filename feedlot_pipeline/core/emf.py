"""CloudWatch Logs' EMF extraction, done by hand where nothing extracts EMF from stdout.

The landing Lambdas print their metrics as Embedded Metric Format lines (``lambdas.common``);
in AWS, CloudWatch Logs turns them into metrics. On the local stack the Lambda bridge and API
gateway run the handlers in one long process whose stdout nobody reads, so ``emf_mirror`` does
the extraction itself and sends the values with PutMetricData, off the request path.

- ``emf_to_metric_data(doc)``: namespace → MetricData of one EMF document.
- ``EmfMirror`` / ``emf_mirror``: a background sender, coalescing documents into few calls.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from feedlot_pipeline.core.metrics import (
    MAX_VALUES_PER_REQUEST,
    metrics_client,
    valid_value,
    value_count,
)
from feedlot_pipeline.core.settings import ObservabilitySettings

log = logging.getLogger("feedlot.metrics")


def _by_request(data: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """MetricData split into requests of at most ``MAX_VALUES_PER_REQUEST`` values."""
    current: list[dict[str, Any]] = []
    for datum in data:
        if current and value_count(current) + value_count([datum]) > MAX_VALUES_PER_REQUEST:
            yield current
            current = []
        current.append(datum)
    if current:
        yield current


def emf_to_metric_data(document: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Namespace → MetricData of one CloudWatch Embedded Metric Format document.

    Per the EMF specification: each ``CloudWatchMetrics`` directive names a namespace, dimension
    sets (lists of member names) and metrics (Name, Unit); each metric's value (a number or a list
    of numbers) and each dimension's value are members of the document's root. One datum per
    metric and dimension set.
    """
    aws = document.get("_aws") or {}
    stamp = aws.get("Timestamp")
    moment = (
        datetime.fromtimestamp(stamp / 1000, timezone.utc)
        if isinstance(stamp, int | float)
        else datetime.now(timezone.utc)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for directive in aws.get("CloudWatchMetrics") or []:
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str):
            continue
        for metric in directive.get("Metrics") or []:
            name = metric.get("Name")
            raw = document.get(name)
            values = raw if isinstance(raw, list) else [raw]
            values = [
                float(v) for v in values if isinstance(v, int | float) and valid_value(float(v))
            ]
            if not values:
                continue
            histogram = Counter(values)
            for dimension_set in directive.get("Dimensions") or [[]]:
                datum: dict[str, Any] = {
                    "MetricName": name,
                    "Timestamp": moment,
                    "Dimensions": [
                        {"Name": d, "Value": str(document.get(d))}
                        for d in dimension_set
                        if document.get(d) not in (None, "")
                    ],
                    "Values": list(histogram),
                    "Counts": [float(c) for c in histogram.values()],
                }
                if metric.get("Unit"):
                    datum["Unit"] = metric["Unit"]
                if metric.get("StorageResolution") == 1:
                    datum["StorageResolution"] = 1
                out.setdefault(namespace, []).append(datum)
    return out


class EmfMirror:
    """Sends EMF documents with PutMetricData from a background thread, coalesced.

    Where no CloudWatch Logs extracts EMF lines from stdout (the local stack's Lambda bridge and
    API gateway run the handlers in one long process) this does the extraction itself, off the
    request path: an invocation only enqueues its document; the thread sends what gathered every
    ``interval`` seconds in as few calls as PutMetricData allows. Best effort: a full queue or a
    failed call drops metrics with a log line. ``flush()`` waits until everything queued so far
    was sent (tests, process exit).
    """

    def __init__(self, interval: float = 0.5, max_pending: int = 10_000) -> None:
        self.interval = interval
        self._queue: queue.Queue[tuple[str, dict] | threading.Event] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def submit(self, document: Mapping[str, Any], settings: ObservabilitySettings) -> None:
        if not settings.metrics_enabled:
            return
        try:
            self._queue.put_nowait((settings.metrics_timeout_seconds, dict(document)))
        except queue.Full:
            self.dropped += 1
            log.warning("metrics dropped: EMF mirror queue full (%d pending)", self._queue.qsize())
            return
        self._ensure_thread()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was submitted before this call is sent (or dropped)."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="feedlot-emf-mirror", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self.interval
            while not isinstance(batch[-1], threading.Event):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            self._send([b for b in batch if not isinstance(b, threading.Event)])
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    def _send(self, batch: list[tuple[float, dict]]) -> None:
        if not batch:
            return
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        timeout = batch[-1][0]
        for _, document in batch:
            try:
                for namespace, data in emf_to_metric_data(document).items():
                    by_namespace.setdefault(namespace, []).extend(data)
            except Exception as err:  # noqa: BLE001 - a malformed document is dropped alone
                log.warning("metrics dropped: not an EMF document (%s)", err)
        for namespace, data in by_namespace.items():
            for chunk in _by_request(data):
                try:
                    metrics_client(timeout).put_metric_data(Namespace=namespace, MetricData=chunk)
                except Exception as err:  # noqa: BLE001 - best effort
                    self.dropped += value_count(chunk)
                    log.warning(
                        "metrics dropped (best effort): %d EMF value(s) to %s not sent: %s: %s",
                        value_count(chunk),
                        namespace,
                        type(err).__name__,
                        err,
                    )


emf_mirror = EmfMirror()
atexit.register(emf_mirror.flush, 5.0)
