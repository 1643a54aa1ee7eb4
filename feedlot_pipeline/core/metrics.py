"""The metrics emitter every layer uses, and the latency statistics it sends.

Metric names, units and dimensions come from ``core.metric_registry``. Emission is per run,
chunk, request or file, never per record, and best effort: ``flush()`` never raises. A
CloudWatch outage, a missing permission or a bad value is logged (WARNING, with what was
dropped) and the load goes on.

- ``MetricsBuffer``: ``add(name, value, **dims)``, ``add_distribution(name, {value: count},
  **dims)``, ``flush()`` → one PutMetricData per ≤ 1000 values (``Values``/``Counts`` arrays, so
  CloudWatch can compute p50/p95 over a run's distribution).
- ``record_load(...)``: what a Dagster batch load run emits (the loader calls it once per run).
- ``record_worker_job(...)``: what an EC2 worker job emits.
- ``event_to_row_latency(...)``: p50/p95 and the distribution of row time − landed time.

The Lambdas emit through Powertools EMF instead; ``core.emf`` mirrors those lines where nothing
extracts them (the local stack).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.config import Config

from feedlot_pipeline.core.metric_registry import spec
from feedlot_pipeline.core.settings import ObservabilitySettings

log = logging.getLogger("feedlot.metrics")

MAX_VALUES_PER_REQUEST = 1000  # PutMetricData: 1000 metric values (and 1 MB) per request
MAX_VALUES_PER_DATUM = 150  # PutMetricData: at most 150 distinct values in one Values array
LATENCY_MAX_SAMPLES = 1000  # a run's latency distribution is sent as ≤ this many weighted samples
# What CloudWatch accepts as a value (anything else fails the whole request).
_MIN_ABS, _MAX_ABS = 8.515920e-109, 1.174271e108

# Best effort: a short timeout and one retry, so an outage costs a load seconds, not minutes.
_METRICS_CONFIG_CACHE: dict[float, Config] = {}


# --- values ------------------------------------------------------------------------------------


def valid_value(value: float) -> bool:
    """Whether CloudWatch accepts ``value`` (one it refuses fails the whole request)."""
    return math.isfinite(value) and (value == 0 or _MIN_ABS <= abs(value) <= _MAX_ABS)


def round_significant(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant digits (few distinct values: short Values arrays)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def percentile(histogram: Mapping[float, int], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of a weighted histogram value → count."""
    total = sum(c for c in histogram.values() if c > 0)
    if total == 0:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for value in sorted(histogram):
        seen += max(0, histogram[value])
        if seen >= rank:
            return value
    return max(histogram)


def scale_counts(histogram: Mapping[float, int], max_samples: int) -> dict[float, int]:
    """The same distribution with counts scaled so they add up to about ``max_samples`` at most
    (each kept value keeps at least 1). Percentiles are preserved to within one sample."""
    total = sum(histogram.values())
    if total <= max_samples:
        return dict(histogram)
    factor = max_samples / total
    return {v: max(1, round(c * factor)) for v, c in histogram.items() if c > 0}


@dataclass(frozen=True)
class LatencyStats:
    """Event → row latency of one run, in seconds: rows, p50, p95, min, max and the histogram
    (value rounded to 3 significant digits → rows)."""

    rows: int
    p50: float | None
    p95: float | None
    minimum: float | None
    maximum: float | None
    histogram: dict[float, int] = field(default_factory=dict)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def event_to_row_latency(
    samples: Iterable[tuple[datetime, datetime] | tuple[datetime, datetime, int]],
) -> LatencyStats:
    """Latency of rows from (landed_at, row_time[, rows]) — give one sample per raw object with
    its row count, not one per row. Naive datetimes are taken as UTC; negative latencies (clock
    skew between the landing host and the loader) count as 0."""
    histogram: Counter[float] = Counter()
    for sample in samples:
        landed, row_time = sample[0], sample[1]
        rows = int(sample[2]) if len(sample) > 2 else 1  # type: ignore[misc]
        if rows <= 0:
            continue
        seconds = max(0.0, (_utc(row_time) - _utc(landed)).total_seconds())
        histogram[round_significant(seconds)] += rows
    rows = sum(histogram.values())
    if not rows:
        return LatencyStats(0, None, None, None, None, {})
    return LatencyStats(
        rows=rows,
        p50=percentile(histogram, 50),
        p95=percentile(histogram, 95),
        minimum=min(histogram),
        maximum=max(histogram),
        histogram=dict(histogram),
    )


# --- the emitter -------------------------------------------------------------------------------


@dataclass
class FlushResult:
    """What one ``flush()`` did: values sent and dropped, requests made, and why any dropped."""

    sent: int = 0
    dropped: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    def __add__(self, other: FlushResult) -> FlushResult:
        return FlushResult(
            self.sent + other.sent,
            self.dropped + other.dropped,
            self.requests + other.requests,
            self.errors + other.errors,
        )


def metrics_client(timeout: float) -> Any:
    """The CloudWatch client of the emitters: short timeouts, one retry (best effort)."""
    from feedlot_pipeline.core.aws import client

    config = _METRICS_CONFIG_CACHE.get(timeout)
    if config is None:
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        _METRICS_CONFIG_CACHE[timeout] = config
    return client("cloudwatch", config)


_Key = tuple[str, str, tuple[tuple[str, str], ...]]  # name, unit, sorted dimensions


class MetricsBuffer:
    """Metrics gathered in memory and sent in as few PutMetricData calls as CloudWatch allows.

    Values of the same metric and dimensions are kept as a histogram (value → count), so adding
    the same value a million times costs one counter. Not thread-safe: one buffer per run or
    invocation. ``flush()`` never raises.
    """

    def __init__(
        self, settings: ObservabilitySettings | None = None, *, timestamp: datetime | None = None
    ) -> None:
        self.settings = settings or ObservabilitySettings()
        self.namespace = self.settings.metrics_namespace
        self.timestamp = timestamp
        self._values: dict[_Key, Counter[float]] = {}
        self._invalid = 0

    def __len__(self) -> int:
        """Distinct values waiting (what the next flush sends)."""
        return sum(len(c) for c in self._values.values())

    def _key(self, name: str, unit: str | None, dims: Mapping[str, Any]) -> _Key:
        registered = spec(name)
        if set(dims) != set(registered.dimensions):
            raise ValueError(
                f"metric {name} has dimensions {registered.dimensions}, not {tuple(sorted(dims))}"
            )
        return (
            name,
            unit or registered.unit,
            tuple(sorted((k, str(v)[:1024] or "-") for k, v in dims.items())),
        )

    def add(self, name: str, value: float, unit: str | None = None, **dims: Any) -> None:
        """One value of a registered metric (its unit unless given) with its dimensions."""
        self.add_distribution(name, {value: 1}, unit, **dims)

    def add_distribution(
        self, name: str, histogram: Mapping[float, int], unit: str | None = None, **dims: Any
    ) -> None:
        """Many values at once, as value → how many times (sent as Values/Counts)."""
        counter = self._values.setdefault(self._key(name, unit, dims), Counter())
        for value, count in histogram.items():
            value = float(value)
            if count <= 0:
                continue
            if not valid_value(value):
                self._invalid += int(count)
                continue
            counter[value] += int(count)

    def metric_data(self) -> list[list[dict[str, Any]]]:
        """The pending values as PutMetricData ``MetricData`` lists, each ≤ 1000 values."""
        moment = self.timestamp or datetime.now(timezone.utc)
        requests: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        in_current = 0
        for (name, unit, dims), counter in self._values.items():
            items = sorted(counter.items())
            start = 0
            while start < len(items):
                if in_current == MAX_VALUES_PER_REQUEST:
                    requests.append(current)
                    current, in_current = [], 0
                size = min(MAX_VALUES_PER_DATUM, MAX_VALUES_PER_REQUEST - in_current)
                part = items[start : start + size]
                start += size
                datum: dict[str, Any] = {
                    "MetricName": name,
                    "Unit": unit,
                    "Timestamp": moment,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
                    "Values": [v for v, _ in part],
                    "Counts": [float(c) for _, c in part],
                }
                current.append(datum)
                in_current += len(part)
        if current:
            requests.append(current)
        return requests

    def flush(self) -> FlushResult:
        """Send everything pending and forget it; never raises (failures are logged)."""
        requests = self.metric_data()
        result = FlushResult(dropped=self._invalid)
        if self._invalid:
            result.errors.append(f"{self._invalid} value(s) not finite or out of range")
        self._values = {}
        self._invalid = 0
        if not requests:
            return _logged(result, self.namespace)
        if not self.settings.metrics_enabled:
            result.dropped += sum(value_count(r) for r in requests)
            log.debug("metrics disabled (FEEDLOT_METRICS_ENABLED=false): %s", _summary(requests))
            return result
        try:
            cloudwatch = metrics_client(self.settings.metrics_timeout_seconds)
        except Exception as err:  # noqa: BLE001 - best effort: never fail the caller
            result.dropped += sum(value_count(r) for r in requests)
            result.errors.append(f"{type(err).__name__}: {err}")
            return _logged(result, self.namespace)
        for data in requests:
            try:
                cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=data)
            except Exception as err:  # noqa: BLE001 - best effort: never fail the caller
                result.dropped += value_count(data)
                result.errors.append(f"{type(err).__name__}: {err}")
                continue
            result.sent += value_count(data)
            result.requests += 1
        return _logged(result, self.namespace)


def value_count(data: Sequence[Mapping[str, Any]]) -> int:
    """Values in a MetricData list (what PutMetricData's 1000-value limit counts)."""
    return sum(len(d.get("Values", ())) or 1 for d in data)


def _summary(requests: list[list[dict[str, Any]]]) -> str:
    names = sorted({d["MetricName"] for data in requests for d in data})
    return f"{sum(value_count(r) for r in requests)} value(s) of {', '.join(names)}"


def _logged(result: FlushResult, namespace: str) -> FlushResult:
    if result.dropped:
        log.warning(
            "metrics dropped (best effort, the work goes on): %d value(s) to %s not sent: %s",
            result.dropped,
            namespace,
            "; ".join(result.errors)[:1000],
        )
    elif result.sent:
        log.debug("metrics sent: %d value(s) in %d request(s)", result.sent, result.requests)
    return result


# --- what the layers emit ----------------------------------------------------------------------


def record_load(
    *,
    job: str,
    seconds: float,
    loaded: int,
    inserted: int,
    updated: int,
    unchanged: int,
    rejected: int,
    redelivered: int = 0,
    partitions: int = 0,
    latency: LatencyStats | None = None,
    rows_by_farm: Mapping[str, int] | None = None,
    settings: ObservabilitySettings | None = None,
) -> FlushResult:
    """Emit the metrics of one batch load run, in one PutMetricData call; never raises.

    Call it once per run, after the run's loads finished (also for a run that loaded nothing:
    zeros are data). ``job`` is the Dagster job name. ``latency`` comes from
    ``event_to_row_latency`` over one sample per raw object: (the object's landing time — the
    notice's ``landed_at``, or its ``received-at`` metadata —, the run's ``row_ts``, rows loaded
    from it). ``rows_by_farm`` is the rows loaded per farm in this run (farms with 0 rows may be
    left out; pass None when farms are too many to be series, see deploy/monitoring.md).
    """
    buffer = MetricsBuffer(settings)
    counts = {
        "RowsLoaded": loaded,
        "RowsInserted": inserted,
        "RowsUpdated": updated,
        "RowsUnchanged": unchanged,
        "RowsRejected": rejected,
        "RowsRedelivered": redelivered,
        "PartitionsLoaded": partitions,
    }
    for name, value in counts.items():
        buffer.add(name, value, Job=job)
    buffer.add("RunDuration", seconds, Job=job)
    if latency is not None and latency.rows:
        buffer.add_distribution(
            "EventToRowLatency", scale_counts(latency.histogram, LATENCY_MAX_SAMPLES), Job=job
        )
        buffer.add("EventToRowLatencyP50", latency.p50 or 0.0, Job=job)
        buffer.add("EventToRowLatencyP95", latency.p95 or 0.0, Job=job)
    for fazenda, rows in (rows_by_farm or {}).items():
        buffer.add("FarmRowsLoaded", rows, Fazenda=fazenda)
    return buffer.flush()


def record_worker_job(
    *, job: str, seconds: float, records: int, settings: ObservabilitySettings | None = None
) -> FlushResult:
    """Emit a finished EC2 worker job's duration, records and records/s; never raises."""
    buffer = MetricsBuffer(settings)
    buffer.add("WorkerJobDuration", seconds, Job=job)
    buffer.add("WorkerRecords", records, Job=job)
    buffer.add("WorkerRecordsPerSecond", records / seconds if seconds > 0 else 0.0, Job=job)
    return buffer.flush()
