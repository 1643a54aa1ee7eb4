"""Dashboards as code: one description of the panels, two renderings.

``PANELS`` says what an operator sees (landing, loads, backlog and freshness, worker, the AWS
services), each series naming a metric of ``core.metrics.REGISTRY``. From it:

- ``grafana_dashboard()``: a Grafana dashboard over the CloudWatch datasource, built with
  grafana-foundation-sdk (``deploy/grafana/feedlot-overview.json``);
- ``cloudwatch_dashboard_body()``: the ``DashboardBody`` of the ``AWS::CloudWatch::Dashboard`` in
  ``deploy/cloudformation/monitoring.yaml`` (CloudFormation ``!Sub`` placeholders for the region,
  environment, namespace and queue names), plus log widgets over the Lambdas' and Dagster's logs.

``feedlot dashboards`` writes both (``--check`` fails when the committed files differ); a test
checks that the committed files are what this module generates and that every panel names a
metric the code emits.

Series over a dimension whose values are not known in advance (Job, Fazenda) show every value:
a ``SEARCH`` expression on CloudWatch, a ``*`` dimension on Grafana.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedlot_pipeline.core.metrics import FEEDLOT, MetricSpec, spec
from feedlot_pipeline.core.settings import DEFAULTS

ALL = "*"  # every value of a dimension
SOURCES = ("sns", "api", "file")
QUEUE_ROLES = ("sensor", "sensor-dlq", "large-files", "large-files-dlq")
FUNCTIONS = {"sns": "sns-handler", "api": "api-handler", "file": "file-drop-handler"}
PERIOD = 300

GRAFANA_UID = "feedlot-overview"
GRAFANA_TITLE = "Feedlot pipeline — overview"
CLOUDWATCH_BEGIN = "      # BEGIN GENERATED DashboardBody"
CLOUDWATCH_END = "      # END GENERATED DashboardBody"
REPO = Path(__file__).resolve().parents[2]
GRAFANA_PATH = REPO / "deploy" / "grafana" / "feedlot-overview.json"
TEMPLATE_PATH = REPO / "deploy" / "cloudformation" / "monitoring.yaml"


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


def panels() -> list[Panel]:
    return [p for row in PANELS for p in row.panels]


# --- Grafana ------------------------------------------------------------------------------------

GRAFANA_VARIABLES = {
    "env": ("environment (stack suffix: feedlot-<env>-…)", "dev"),
    "region": ("AWS region", DEFAULTS["AWS_DEFAULT_REGION"]),
    "namespace": ("FEEDLOT_METRICS_NAMESPACE", DEFAULTS["FEEDLOT_METRICS_NAMESPACE"]),
}
GRAFANA_NAMES = {
    "SensorQueueName": DEFAULTS["FEEDLOT_SENSOR_QUEUE"],
    "SensorDlqName": DEFAULTS["FEEDLOT_SENSOR_DLQ"],
    "LargeFileDlqName": DEFAULTS["FEEDLOT_LARGE_FILE_DLQ"],
    "SnsHandlerFailureQueueName": "feedlot-sns-handler-failures",
    "FailureTopicName": DEFAULTS["FEEDLOT_FAILURE_TOPIC"],
    "ApiStageName": "prod",
}


def _grafana_value(value: str) -> str:
    """``{env}`` → ``$env``; a CloudFormation parameter → its default."""
    out = value.replace("{env}", "$env")
    for name, default in GRAFANA_NAMES.items():
        out = out.replace("{" + name + "}", default)
    return out


def grafana_dashboard() -> dict[str, Any]:
    """The Grafana dashboard as JSON-ready data (grafana-foundation-sdk builders)."""
    from grafana_foundation_sdk.builders import cloudwatch, common, dashboard, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import cloudwatch as cw_models
    from grafana_foundation_sdk.models import common as common_models
    from grafana_foundation_sdk.models import dashboard as models

    datasource = models.DataSourceRef(type_val="cloudwatch", uid="${datasource}")
    board = (
        dashboard.Dashboard(GRAFANA_TITLE)
        .uid(GRAFANA_UID)
        .tags(["feedlot", "generated"])
        .description(
            "Generated by `feedlot dashboards` from feedlot_pipeline/observability/dashboards.py; "
            "do not edit here."
        )
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("CloudWatch").type("cloudwatch")
        )
    )
    for name, (label, default) in GRAFANA_VARIABLES.items():
        board = board.with_variable(
            dashboard.TextBoxVariable(name).label(label).default_value(default)
        )
    panel_id = 0
    for row in PANELS:
        board = board.with_row(dashboard.Row(row.title))
        for panel in row.panels:
            panel_id += 1
            built = (
                timeseries.Panel()
                .id(panel_id)
                .title(panel.title)
                .description(panel.description)
                .datasource(datasource)
                .unit(panel.unit)
                .span(panel.width)
                .height(8)
                .legend(
                    common.VizLegendOptions()
                    .display_mode(common_models.LegendDisplayMode.LIST)
                    .placement(common_models.LegendPlacement.BOTTOM)
                    .show_legend(True)
                )
                .tooltip(
                    common.VizTooltipOptions()
                    .mode(common_models.TooltipDisplayMode.MULTI)
                    .sort(common_models.SortOrder.DESCENDING)
                )
            )
            if panel.threshold is not None:
                built = built.thresholds(
                    dashboard.ThresholdsConfig()
                    .mode(models.ThresholdsMode.ABSOLUTE)
                    .steps(
                        [
                            models.Threshold(value=None, color="green"),
                            models.Threshold(value=panel.threshold, color="red"),
                        ]
                    )
                ).thresholds_style(
                    common.GraphThresholdsStyleConfig().mode(
                        common_models.GraphTresholdsStyleMode.DASHED
                    )
                )
            for index, series in enumerate(panel.series):
                namespace = "$namespace" if series.namespace == FEEDLOT else series.namespace
                built = built.with_target(
                    cloudwatch.CloudWatchMetricsQuery()
                    .ref_id(chr(ord("A") + index))
                    .datasource(datasource)
                    .query_mode(cw_models.CloudWatchQueryMode.METRICS)
                    .metric_query_type(cw_models.MetricQueryType.SEARCH)
                    .metric_editor_mode(cw_models.MetricEditorMode.BUILDER)
                    .region("$region")
                    .namespace(namespace)
                    .metric_name(series.metric)
                    .dimensions({k: _grafana_value(v) for k, v in series.dims})
                    .match_exact(not series.searches)
                    .statistic(series.stat)
                    .period(str(PERIOD))
                    .label(series.label or series.metric)
                )
            board = board.with_panel(built)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


# --- CloudWatch ----------------------------------------------------------------------------------


def _cw_value(value: str) -> str:
    """``{env}`` → ``${EnvironmentName}``; ``{Param}`` → ``${Param}`` (CloudFormation ``!Sub``)."""
    return value.replace("{env}", "{EnvironmentName}").replace("{", "${")


def _cw_namespace(series: Series) -> str:
    return "${MetricsNamespace}" if series.namespace == FEEDLOT else series.namespace


def _cw_metrics(panel: Panel, first_id: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for index, series in enumerate(panel.series):
        label = series.label or series.metric
        if series.searches:
            keys = ",".join(k for k, _ in series.dims)
            fixed = " ".join(f'{k}="{_cw_value(v)}"' for k, v in series.dims if v != ALL)
            expression = (
                f"SEARCH('{{{_cw_namespace(series)},{keys}}} "
                f'MetricName="{series.metric}" {fixed}'.rstrip()
                + f"', '{series.stat}', {PERIOD})"
            )
            rows.append([{"expression": expression, "label": label, "id": f"e{first_id + index}"}])
            continue
        row: list[Any] = [_cw_namespace(series), series.metric]
        for key, value in series.dims:
            row += [key, _cw_value(value)]
        row.append({"stat": series.stat, "label": label})
        rows.append(row)
    return rows


LOG_WIDGETS = (
    (
        "Errors in the landing Lambdas and Dagster (last lines)",
        "fields @timestamp, @log, level, message, correlation_id, error"
        " | filter level = 'ERROR' or level = 'CRITICAL'"
        " | sort @timestamp desc | limit 50",
    ),
    (
        "Rejections by reason",
        "filter message = 'rejections'"
        " | stats sum(count) as rejected by reason_code, source"
        " | sort rejected desc",
    ),
)
LOG_GROUPS = (
    "/aws/lambda/feedlot-${EnvironmentName}-sns-handler",
    "/aws/lambda/feedlot-${EnvironmentName}-api-handler",
    "/aws/lambda/feedlot-${EnvironmentName}-file-drop-handler",
    "${DagsterLogGroupName}",
)


def cloudwatch_dashboard_body() -> dict[str, Any]:
    """The CloudWatch dashboard body (with ``${…}`` placeholders for CloudFormation ``!Sub``)."""
    widgets: list[dict[str, Any]] = []
    y = 0
    next_id = 0
    for row in PANELS:
        widgets.append(
            {
                "type": "text",
                "x": 0,
                "y": y,
                "width": 24,
                "height": 1,
                "properties": {"markdown": f"## {row.title}"},
            }
        )
        y += 1
        x = 0
        for panel in row.panels:
            width = panel.width
            if x + width > 24:
                x, y = 0, y + 6
            properties: dict[str, Any] = {
                "title": panel.title,
                "view": "timeSeries",
                "region": "${AWS::Region}",
                "period": PERIOD,
                "stacked": False,
                "metrics": _cw_metrics(panel, next_id),
            }
            next_id += len(panel.series)
            if panel.threshold is not None:
                properties["annotations"] = {
                    "horizontal": [{"label": "alarm", "value": panel.threshold}]
                }
            widgets.append(
                {
                    "type": "metric",
                    "x": x,
                    "y": y,
                    "width": width,
                    "height": 6,
                    "properties": properties,
                }
            )
            x += width
        y += 6
    sources = " | ".join(f"SOURCE '{g}'" for g in LOG_GROUPS)
    for title, query in LOG_WIDGETS:
        widgets.append(
            {
                "type": "log",
                "x": 0,
                "y": y,
                "width": 24,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": "${AWS::Region}",
                    "view": "table",
                    "query": f"{sources} | {query}",
                },
            }
        )
        y += 6
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


# --- files ---------------------------------------------------------------------------------------


def grafana_json() -> str:
    return json.dumps(grafana_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def cloudwatch_block() -> str:
    """The generated lines of monitoring.yaml, markers included."""
    body = json.dumps(cloudwatch_dashboard_body(), indent=2, sort_keys=True)
    lines = [
        CLOUDWATCH_BEGIN + ": `feedlot dashboards` writes it from observability/dashboards.py",
        "      DashboardBody: !Sub |",
        *("        " + line for line in body.splitlines()),
        CLOUDWATCH_END,
    ]
    return "\n".join(lines) + "\n"


def template_with_block(template: str) -> str:
    """``template`` with its generated DashboardBody block replaced by the current one."""
    lines = template.splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith(CLOUDWATCH_BEGIN))
    end = next(i for i, line in enumerate(lines) if line.startswith(CLOUDWATCH_END))
    return "".join(lines[:begin]) + cloudwatch_block() + "".join(lines[end + 1 :])


def write(check: bool = False) -> list[Path]:
    """Write the Grafana JSON and the template's block; the files that changed (``check``: only
    report them, write nothing)."""
    changed: list[Path] = []
    wanted = {
        GRAFANA_PATH: grafana_json(),
        TEMPLATE_PATH: template_with_block(TEMPLATE_PATH.read_text()),
    }
    for path, text in wanted.items():
        if not path.exists() or path.read_text() != text:
            changed.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed
