"""What the dashboards show: one description of the panels, rendered twice by ``dashboards``.

``PANELS`` says what an operator sees (landing, loads, backlog and freshness, worker, the AWS
services) as rows of panels, each series naming a metric of ``core.metric_registry.REGISTRY``
(a ``Series`` resolves its ``spec`` on use, so a name nobody registered fails at once). Adding
a panel is an edit here; ``feedlot dashboards`` then regenerates both renderings.

Series over a dimension whose values are not known in advance (Job, Fazenda) show every value
(``ALL``): a ``SEARCH`` expression on CloudWatch, a ``*`` dimension on Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feedlot_pipeline.core.metric_registry import FEEDLOT, MetricSpec, spec
from feedlot_pipeline.core.settings import DEFAULTS

ALL = "*"  # every value of a dimension
SOURCES = ("sns", "api", "file")
QUEUE_ROLES = ("sensor", "sensor-dlq", "large-files", "large-files-dlq")
FUNCTIONS = {"sns": "sns-handler", "api": "api-handler", "file": "file-drop-handler"}


@dataclass(frozen=True)
class Series:
    """One metric, one statistic, one set of dimensions (a value, or ``ALL`` values)."""

    metric: str
    stat: str = "Sum"
    dims: tuple[tuple[str, str], ...] = ()
    namespace: str = FEEDLOT
    label: str = ""

    @property
    def spec(self) -> MetricSpec:
        return spec(self.metric, self.namespace)

    @property
    def searches(self) -> bool:
        return any(v == ALL for _, v in self.dims)


@dataclass(frozen=True)
class Panel:
    title: str
    series: tuple[Series, ...]
    unit: str = "short"  # Grafana unit id
    description: str = ""
    threshold: float | None = None
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _by_source(metric: str, stat: str = "Sum", label: str = "") -> tuple[Series, ...]:
    return tuple(
        Series(metric, stat, (("Source", s),), label=f"{label or metric} {s}") for s in SOURCES
    )


def _all_jobs(metric: str, stat: str = "Sum", label: str = "") -> Series:
    return Series(metric, stat, (("Job", ALL),), label=label or metric)


def _functions(metric: str, stat: str = "Sum") -> tuple[Series, ...]:
    return tuple(
        Series(
            metric,
            stat,
            (("FunctionName", f"feedlot-{{env}}-{name}"),),
            namespace="AWS/Lambda",
            label=f"{metric} {source}",
        )
        for source, name in FUNCTIONS.items()
    )


def _queues(metric: str, stat: str) -> tuple[Series, ...]:
    names = {
        "sensor": "{SensorQueueName}",
        "sensor-dlq": "{SensorDlqName}",
        "large-files-dlq": "{LargeFileDlqName}",
        "sns-handler-failures": "{SnsHandlerFailureQueueName}",
    }
    return tuple(
        Series(metric, stat, (("QueueName", name),), namespace="AWS/SQS", label=role)
        for role, name in names.items()
    )


def _api(metric: str) -> Series:
    return Series(
        metric,
        "Sum",
        (("ApiName", "feedlot-{env}-ingest"), ("Stage", "{ApiStageName}")),
        namespace="AWS/ApiGateway",
        label=metric,
    )


P95 = DEFAULTS["FEEDLOT_EVENT_TO_ROW_P95_SECONDS"]

PANELS: tuple[Row, ...] = (
    Row(
        "Landing (Lambdas: SNS, API, file drops)",
        (
            Panel(
                "Records received / landed",
                _by_source("RecordsReceived", label="received")
                + _by_source("RecordsLanded", label="landed"),
                description="Records per 5 min by source; every record lands, rejected ones too.",
            ),
            Panel(
                "Records rejected at landing",
                _by_source("RecordsRejected", label="rejected")[1:],  # SNS does not judge
                description="API: by the core rules; file: unparseable or oversize lines.",
            ),
            Panel(
                "Landing latency p50 / p95",
                _by_source("LandingLatency", "p50", "p50")
                + _by_source("LandingLatency", "p95", "p95"),
                unit="ms",
                description="The event's own time (SNS publish, API request, S3 event) to landed.",
            ),
            Panel(
                "Landing failures, refused requests, large files",
                _by_source("LandingFailures", label="failures")
                + (Series("RequestsRefused", "Sum", (("Source", "api"),), label="API 4xx"),)
                + (Series("LargeFilesHandedOff", "Sum", (("Source", "file"),), label="to worker"),),
            ),
        ),
    ),
    Row(
        "Loads (Dagster batch runs)",
        (
            Panel(
                "Rows per run outcome",
                tuple(
                    _all_jobs(m, label=m.removeprefix("Rows").lower())
                    for m in (
                        "RowsInserted",
                        "RowsUpdated",
                        "RowsUnchanged",
                        "RowsRejected",
                        "RowsRedelivered",
                    )
                ),
                description="Summed over 5 min, per job.",
            ),
            Panel(
                "Event → row latency",
                (
                    _all_jobs("EventToRowLatency", "p50", "p50"),
                    _all_jobs("EventToRowLatency", "p95", "p95"),
                    _all_jobs("EventToRowLatencyP95", "Maximum", "worst run's own p95"),
                ),
                unit="s",
                threshold=float(P95),
                description="Row time minus the landed object's time. Alarm above the line.",
            ),
            Panel(
                "Load runs",
                (
                    _all_jobs("RunDuration", "Average", "run duration avg"),
                    _all_jobs("RunDuration", "Maximum", "run duration max"),
                    _all_jobs("PartitionsLoaded", "Sum", "partitions loaded"),
                ),
            ),
            Panel(
                "Rows loaded per farm",
                (Series("FarmRowsLoaded", "Sum", (("Fazenda", ALL),), label="rows"),),
                description="One series per farm.",
            ),
        ),
    ),
    Row(
        "Backlog and freshness",
        (
            Panel(
                "Queue depth (Dagster's view)",
                tuple(
                    Series("QueueDepth", "Maximum", (("Queue", r),), label=r) for r in QUEUE_ROLES
                )
                + (
                    Series(
                        "QueueInFlight", "Maximum", (("Queue", "sensor"),), label="sensor in flight"
                    ),
                ),
                description="Sampled by backlog_metrics_sensor every minute.",
            ),
            Panel(
                "Age of the oldest message (SQS)",
                _queues("ApproximateAgeOfOldestMessage", "Maximum"),
                unit="s",
            ),
            Panel(
                "Dead letters waiting (SQS)",
                _queues("ApproximateNumberOfMessagesVisible", "Maximum")[1:],
                threshold=0.0,
                description="Any message here is an alarm: `feedlot dlq list`.",
            ),
            Panel(
                "Silent farms",
                (Series("SilentFarms", "Maximum", label="farms without rows for 26 h"),),
                threshold=0.0,
            ),
        ),
    ),
    Row(
        "EC2 worker",
        (
            Panel(
                "Worker jobs",
                (
                    _all_jobs("WorkerJobDuration", "Maximum", "duration"),
                    _all_jobs("WorkerRecords", "Sum", "records"),
                ),
            ),
            Panel(
                "Worker throughput",
                (_all_jobs("WorkerRecordsPerSecond", "Average", "records/s"),),
                unit="short",
            ),
        ),
    ),
    Row(
        "AWS services",
        (
            Panel("Lambda errors", _functions("Errors"), threshold=0.0),
            Panel("Lambda duration p95", _functions("Duration", "p95"), unit="ms"),
            Panel(
                "Ingest API",
                (_api("Count"), _api("4XXError"), _api("5XXError")),
            ),
            Panel(
                "Failure documents published",
                (
                    Series(
                        "NumberOfMessagesPublished",
                        "Sum",
                        (("TopicName", "{FailureTopicName}"),),
                        namespace="AWS/SNS",
                        label="failure topic",
                    ),
                ),
                threshold=0.0,
            ),
        ),
    ),
)


def all_panels() -> list[Panel]:
    """Every panel, row by row."""
    return [p for row in PANELS for p in row.panels]
