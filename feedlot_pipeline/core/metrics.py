"""Metrics of the platform: the one registry of metric names, and the emitter every layer uses.

The registry (``REGISTRY``) names every metric the code emits in the ``Feedlot`` namespace
(``FEEDLOT_METRICS_NAMESPACE``) with its unit, its dimensions and who emits it, plus the AWS
metrics (``AWS/SQS``, ``AWS/Lambda``…) the alarms and dashboards read. Emitters, dashboards
(``observability.dashboards``) and ``feedlot metrics`` all take names from here, and a test checks
that every dashboard panel names a registered metric that some emitter really sends.

Dimensions stay low-cardinality: ``Source`` (sns, api, file), ``Job`` (a Dagster job or worker
job name), ``Queue`` (a queue's role: sensor, sensor-dlq, …), and ``Fazenda`` only on
``FarmRowsLoaded`` (one series per farm: fine for tens to a few hundred farms; see
``deploy/monitoring.md`` for beyond). Never a record, event, run or object id.

Emission is per run, chunk, request or file, never per record, and best effort: ``flush()``
never raises. A CloudWatch outage, a missing permission or a bad value is logged (WARNING, with
what was dropped) and the load goes on.

- ``MetricsBuffer``: ``add(name, value, **dims)``, ``add_distribution(name, {value: count},
  **dims)``, ``flush()`` → one PutMetricData per ≤ 1000 values (``Values``/``Counts`` arrays, so
  CloudWatch can compute p50/p95 over a run's distribution).
- ``record_load(...)``: what a Dagster batch load run emits (the loader calls it once per run).
- ``record_worker_job(...)``: what an EC2 worker job emits.
- ``event_to_row_latency(...)``: p50/p95 and the distribution of row time − landed time.
- ``emf_to_metric_data(doc)`` / ``EmfMirror``: CloudWatch Logs' EMF extraction, done by hand where
  nothing extracts EMF from stdout (the Lambdas on the local stack).
"""

from __future__ import annotations

import atexit
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from botocore.config import Config

from feedlot_pipeline.core.settings import ObservabilitySettings

log = logging.getLogger("feedlot.metrics")

FEEDLOT = "Feedlot"  # stands for the configured namespace (FEEDLOT_METRICS_NAMESPACE)
COUNT = "Count"
SECONDS = "Seconds"
MILLISECONDS = "Milliseconds"
PER_SECOND = "Count/Second"

MAX_VALUES_PER_REQUEST = 1000  # PutMetricData: 1000 metric values (and 1 MB) per request
MAX_VALUES_PER_DATUM = 150  # PutMetricData: at most 150 distinct values in one Values array
LATENCY_MAX_SAMPLES = 1000  # a run's latency distribution is sent as ≤ this many weighted samples
# What CloudWatch accepts as a value (anything else fails the whole request).
_MIN_ABS, _MAX_ABS = 8.515920e-109, 1.174271e108

# Best effort: a short timeout and one retry, so an outage costs a load seconds, not minutes.
_METRICS_CONFIG_CACHE: dict[float, Config] = {}

Kind = Literal["count", "latency", "gauge", "rate"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, unit, dimensions, who emits it and what it means."""

    name: str
    unit: str
    dimensions: tuple[str, ...]
    emitter: str
    description: str
    kind: Kind = "count"
    namespace: str = FEEDLOT  # FEEDLOT: ours; else an AWS namespace (emitted by the service)
    planned: bool = False  # registered for a layer not built yet: no emitter, on no dashboard

    @property
    def ours(self) -> bool:
        return self.namespace == FEEDLOT


def _m(*args: Any, **kwargs: Any) -> MetricSpec:
    return MetricSpec(*args, **kwargs)


_LAMBDAS = "lambdas/common.landing_metrics (sns_handler, api_handler, s3_handler; EMF)"
_LOAD = "core.metrics.record_load (the batch load run)"
_BACKLOG = "observability.sensors.backlog_metrics_sensor"
_FRESHNESS = "observability.sensors.farm_freshness_sensor"
_WORKER = "worker.bulk_import → core.metrics.record_worker_job"

SPECS: tuple[MetricSpec, ...] = (
    # --- landing Lambdas (dimension Source: sns | api | file) ---------------------------------
    _m("RecordsReceived", COUNT, ("Source",), _LAMBDAS, "records in the event, request or file"),
    _m("RecordsLanded", COUNT, ("Source",), _LAMBDAS, "records written to the raw zone"),
    _m(
        "RecordsRejected",
        COUNT,
        ("Source",),
        _LAMBDAS,
        "records already known bad when landed (API: the core rules; file: unparseable or "
        "oversize); they land too and are filed as rejections by the load",
    ),
    _m(
        "LandingLatency",
        MILLISECONDS,
        ("Source",),
        _LAMBDAS,
        "the event's own time (SNS publish, API request, S3 event) → objects landed and announced",
        kind="latency",
    ),
    _m(
        "LandingFailures",
        COUNT,
        ("Source",),
        _LAMBDAS,
        "invocations that failed (raised for Lambda's retry, or answered 503)",
    ),
    _m("RequestsRefused", COUNT, ("Source",), _LAMBDAS, "API requests answered 4xx"),
    _m(
        "LargeFilesHandedOff",
        COUNT,
        ("Source",),
        _LAMBDAS,
        "dropped files too large for the Lambda, sent to the EC2 worker",
    ),
    # --- Dagster batch load runs (dimension Job) ------------------------------------------------
    _m("RowsLoaded", COUNT, ("Job",), _LOAD, "distinct rows loaded (inserted+updated+unchanged)"),
    _m("RowsInserted", COUNT, ("Job",), _LOAD, "rows new to historico_consumo"),
    _m("RowsUpdated", COUNT, ("Job",), _LOAD, "rows whose record changed (latest delivery wins)"),
    _m("RowsUnchanged", COUNT, ("Job",), _LOAD, "rows already stored as they are"),
    _m("RowsRejected", COUNT, ("Job",), _LOAD, "records filed in historico_consumo_rejeitados"),
    _m(
        "RowsRedelivered",
        COUNT,
        ("Job",),
        _LOAD,
        "records delivered again unchanged (no rejection, nothing written)",
    ),
    _m("PartitionsLoaded", COUNT, ("Job",), _LOAD, "farm × day partitions a run loaded"),
    _m("RunDuration", SECONDS, ("Job",), _LOAD, "wall time of a load run", kind="latency"),
    _m(
        "EventToRowLatency",
        SECONDS,
        ("Job",),
        _LOAD,
        "row time − the landed object's time, one weighted sample per object and run "
        "(CloudWatch computes p50/p95 over any period)",
        kind="latency",
    ),
    _m(
        "EventToRowLatencyP50",
        SECONDS,
        ("Job",),
        _LOAD,
        "a run's own event → row p50",
        kind="gauge",
    ),
    _m(
        "EventToRowLatencyP95",
        SECONDS,
        ("Job",),
        _LOAD,
        "a run's own event → row p95",
        kind="gauge",
    ),
    _m(
        "FarmRowsLoaded",
        COUNT,
        ("Fazenda",),
        _LOAD,
        "rows loaded per farm (one series per farm; `_unrouted` never has rows)",
    ),
    # --- backlog and freshness (observability sensors) ------------------------------------------
    _m(
        "QueueDepth",
        COUNT,
        ("Queue",),
        _BACKLOG,
        "messages waiting (ApproximateNumberOfMessages) per queue role: sensor, sensor-dlq, "
        "large-files, large-files-dlq",
        kind="gauge",
    ),
    _m(
        "QueueInFlight",
        COUNT,
        ("Queue",),
        _BACKLOG,
        "messages received and not yet deleted (ApproximateNumberOfMessagesNotVisible)",
        kind="gauge",
    ),
    _m(
        "SilentFarms",
        COUNT,
        (),
        _FRESHNESS,
        "registered farms with no rows loaded for FEEDLOT_FARM_SILENCE_HOURS (26 h)",
        kind="gauge",
    ),
    # --- EC2 worker jobs (dimension Job) ---------------------------------------------------------
    _m("WorkerJobDuration", SECONDS, ("Job",), _WORKER, "wall time of a worker job", "latency"),
    _m("WorkerRecords", COUNT, ("Job",), _WORKER, "records a worker job read"),
    _m(
        "WorkerRecordsPerSecond", PER_SECOND, ("Job",), _WORKER, "records/s of a worker job", "rate"
    ),
    # --- analytics -------------------------------------------------------------------------------
    _m(
        "SummaryDuration",
        SECONDS,
        ("Job",),
        "analytics/refresh.py (analytics_refresh_job)",
        "time to refresh the analytics of a run's partitions",
        "latency",
    ),
    _m(
        "DescribeDuration",
        SECONDS,
        ("Job",),
        "analytics (planned)",
        "time to build the describe summaries",
        "latency",
        planned=True,
    ),
    # --- AWS's own metrics the alarms and dashboards read ---------------------------------------
    _m(
        "ApproximateNumberOfMessagesVisible",
        COUNT,
        ("QueueName",),
        "SQS",
        "messages waiting",
        "gauge",
        namespace="AWS/SQS",
    ),
    _m(
        "ApproximateAgeOfOldestMessage",
        SECONDS,
        ("QueueName",),
        "SQS",
        "age of the oldest message waiting",
        "gauge",
        namespace="AWS/SQS",
    ),
    _m("Errors", COUNT, ("FunctionName",), "Lambda", "failed invocations", namespace="AWS/Lambda"),
    _m("Invocations", COUNT, ("FunctionName",), "Lambda", "invocations", namespace="AWS/Lambda"),
    _m(
        "Duration",
        MILLISECONDS,
        ("FunctionName",),
        "Lambda",
        "invocation time",
        "latency",
        namespace="AWS/Lambda",
    ),
    _m(
        "5XXError",
        COUNT,
        ("ApiName", "Stage"),
        "API Gateway",
        "5xx answers",
        namespace="AWS/ApiGateway",
    ),
    _m(
        "4XXError",
        COUNT,
        ("ApiName", "Stage"),
        "API Gateway",
        "4xx answers",
        namespace="AWS/ApiGateway",
    ),
    _m("Count", COUNT, ("ApiName", "Stage"), "API Gateway", "requests", namespace="AWS/ApiGateway"),
    _m(
        "NumberOfMessagesPublished",
        COUNT,
        ("TopicName",),
        "SNS",
        "messages published (on the failure topic: whole events given up on)",
        namespace="AWS/SNS",
    ),
)

REGISTRY: dict[tuple[str, str], MetricSpec] = {(s.namespace, s.name): s for s in SPECS}
OURS: dict[str, MetricSpec] = {s.name: s for s in SPECS if s.ours}


def spec(name: str, namespace: str = FEEDLOT) -> MetricSpec:
    """The registered metric; KeyError for a name nobody registered (a programming error)."""
    try:
        return REGISTRY[(namespace, name)]
    except KeyError:
        raise KeyError(f"metric {namespace}/{name} is not in core.metrics.REGISTRY") from None


# --- values ------------------------------------------------------------------------------------


def _valid(value: float) -> bool:
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


def _metrics_client(timeout: float) -> Any:
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
            if not _valid(value):
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
            result.dropped += sum(_count(r) for r in requests)
            log.debug("metrics disabled (FEEDLOT_METRICS_ENABLED=false): %s", _summary(requests))
            return result
        try:
            cloudwatch = _metrics_client(self.settings.metrics_timeout_seconds)
        except Exception as err:  # noqa: BLE001 - best effort: never fail the caller
            result.dropped += sum(_count(r) for r in requests)
            result.errors.append(f"{type(err).__name__}: {err}")
            return _logged(result, self.namespace)
        for data in requests:
            try:
                cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=data)
            except Exception as err:  # noqa: BLE001 - best effort: never fail the caller
                result.dropped += _count(data)
                result.errors.append(f"{type(err).__name__}: {err}")
                continue
            result.sent += _count(data)
            result.requests += 1
        return _logged(result, self.namespace)


def _count(data: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(d.get("Values", ())) or 1 for d in data)


def _by_request(data: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """MetricData split into requests of at most ``MAX_VALUES_PER_REQUEST`` values."""
    current: list[dict[str, Any]] = []
    for datum in data:
        if current and _count(current) + _count([datum]) > MAX_VALUES_PER_REQUEST:
            yield current
            current = []
        current.append(datum)
    if current:
        yield current


def _summary(requests: list[list[dict[str, Any]]]) -> str:
    names = sorted({d["MetricName"] for data in requests for d in data})
    return f"{sum(_count(r) for r in requests)} value(s) of {', '.join(names)}"


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


# --- EMF → PutMetricData (what CloudWatch Logs does with an EMF line) ---------------------------


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
            values = [float(v) for v in values if isinstance(v, int | float) and _valid(float(v))]
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
                    _metrics_client(timeout).put_metric_data(Namespace=namespace, MetricData=chunk)
                except Exception as err:  # noqa: BLE001 - best effort
                    self.dropped += _count(chunk)
                    log.warning(
                        "metrics dropped (best effort): %d EMF value(s) to %s not sent: %s: %s",
                        _count(chunk),
                        namespace,
                        type(err).__name__,
                        err,
                    )


emf_mirror = EmfMirror()
atexit.register(emf_mirror.flush, 5.0)
