"""The one registry of metric names: every metric the platform emits or reads, with its unit,
dimensions, who emits it and what it means.

``REGISTRY`` names every metric the code emits in the ``Feedlot`` namespace
(``FEEDLOT_METRICS_NAMESPACE``), plus the AWS metrics (``AWS/SQS``, ``AWS/Lambda``…) the alarms
and dashboards read. The emitters (``core.metrics``, ``lambdas.common``), the dashboards
(``observability.panels``) and ``feedlot metrics`` all take names from here, and a test checks
that every dashboard panel names a registered metric that some emitter really sends.

Dimensions stay low-cardinality: ``Source`` (sns, api, file), ``Job`` (a Dagster job or worker
job name), ``Queue`` (a queue's role: sensor, sensor-dlq, …), and ``Fazenda`` only on
``FarmRowsLoaded`` (one series per farm: fine for tens to a few hundred farms; see
``deploy/monitoring.md`` for beyond). Never a record, event, run or object id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FEEDLOT = "Feedlot"  # stands for the configured namespace (FEEDLOT_METRICS_NAMESPACE)
COUNT = "Count"
SECONDS = "Seconds"
MILLISECONDS = "Milliseconds"
PER_SECOND = "Count/Second"

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
        raise KeyError(
            f"metric {namespace}/{name} is not in core.metric_registry.REGISTRY"
        ) from None
