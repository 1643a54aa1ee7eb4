"""``feedlot metrics``: the platform's metrics of the last N minutes, in the terminal.

Read back from CloudWatch (the moto server locally, AWS when deployed: whatever
``AWS_ENDPOINT_URL`` says) with ListMetrics and GetMetricData: per series (metric and dimension
values) the number of samples, their sum, average and maximum, p50/p95 for latencies, and a
sparkline of the window, one character per minute (a blank: no data that minute).

p50/p95 come from CloudWatch's percentile statistics, computed over the values the emitters
sent (Values/Counts, EMF). An endpoint that does not compute them (moto 5.2 answers 500) gets
"n/a"; the per-run ``EventToRowLatencyP50/P95`` gauges still show each run's own percentiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from feedlot_pipeline.core.metric_registry import OURS, MetricSpec

BLOCKS = "▁▂▃▄▅▆▇█"
MAX_QUERIES = 500  # GetMetricData: queries per request


@dataclass
class SeriesStats:
    """One series over the window."""

    name: str
    dims: tuple[tuple[str, str], ...]
    spec: MetricSpec | None
    count: float = 0.0
    total: float = 0.0
    maximum: float | None = None
    p50: float | None = None
    p95: float | None = None
    per_minute: list[float | None] = field(default_factory=list)

    @property
    def average(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class MetricsView:
    namespace: str
    minutes: int
    start: datetime
    end: datetime
    series: list[SeriesStats]
    percentiles: bool  # the endpoint computed p50/p95


def list_series(namespace: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    from feedlot_pipeline.core.aws import client

    found = set()
    for page in client("cloudwatch").get_paginator("list_metrics").paginate(Namespace=namespace):
        for metric in page["Metrics"]:
            dims = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
            found.add((metric["MetricName"], dims))
    order = {name: i for i, name in enumerate(OURS)}
    return sorted(found, key=lambda s: (order.get(s[0], len(order)), s[0], s[1]))


def _metric(namespace: str, name: str, dims: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims],
    }


def _get(queries: list[dict[str, Any]], start: datetime, end: datetime) -> dict[str, Any]:
    """Id → (timestamps, values) of every query, in as many GetMetricData calls as needed."""
    from feedlot_pipeline.core.aws import client

    cloudwatch = client("cloudwatch")
    out: dict[str, Any] = {}
    for first in range(0, len(queries), MAX_QUERIES):
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries[first : first + MAX_QUERIES],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        while True:
            response = cloudwatch.get_metric_data(**kwargs)
            for result in response["MetricDataResults"]:
                times, values = out.get(result["Id"], ([], []))
                out[result["Id"]] = (
                    times + list(result.get("Timestamps", [])),
                    values + list(result.get("Values", [])),
                )
            token = response.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    return out


def _sparkline_stat(spec: MetricSpec | None) -> str:
    if spec is None or spec.kind == "count":
        return "Sum"
    return "Maximum" if spec.kind == "gauge" else "Average"


def read_metrics(namespace: str, minutes: int, now: datetime | None = None) -> MetricsView:
    """Every series of ``namespace`` with data in the last ``minutes``, with its statistics."""
    from botocore.exceptions import ClientError

    now = now or datetime.now(timezone.utc)
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    window = minutes * 60
    series = [SeriesStats(name, dims, OURS.get(name)) for name, dims in list_series(namespace)]
    queries: list[dict[str, Any]] = []
    for i, s in enumerate(series):
        metric = _metric(namespace, s.name, s.dims)
        for suffix, stat, period in (
            ("n", "SampleCount", window),
            ("s", "Sum", window),
            ("x", "Maximum", window),
            ("m", _sparkline_stat(s.spec), 60),
        ):
            queries.append(
                {
                    "Id": f"q{i}{suffix}",
                    "MetricStat": {"Metric": metric, "Period": period, "Stat": stat},
                    "ReturnData": True,
                }
            )
    results = _get(queries, start, end) if queries else {}
    for i, s in enumerate(series):
        s.count = sum(results.get(f"q{i}n", ([], []))[1])
        s.total = sum(results.get(f"q{i}s", ([], []))[1])
        maxima = results.get(f"q{i}x", ([], []))[1]
        s.maximum = max(maxima) if maxima else None
        times, values = results.get(f"q{i}m", ([], []))
        buckets: list[float | None] = [None] * minutes
        for moment, value in zip(times, values, strict=False):
            index = int((moment - start).total_seconds() // 60)
            if 0 <= index < minutes:
                buckets[index] = value if buckets[index] is None else buckets[index] + value
        s.per_minute = buckets
    series = [s for s in series if s.count]
    percentiles = True
    latencies = [(i, s) for i, s in enumerate(series) if s.spec and s.spec.kind == "latency"]
    if latencies:
        queries = [
            {
                "Id": f"p{i}{stat}",
                "MetricStat": {
                    "Metric": _metric(namespace, s.name, s.dims),
                    "Period": window,
                    "Stat": stat,
                },
            }
            for i, s in latencies
            for stat in ("p50", "p95")
        ]
        try:
            results = _get(queries, start, end)
        except ClientError:
            percentiles = False  # e.g. moto: no percentile statistics
        else:
            for i, s in latencies:
                p50 = results.get(f"p{i}p50", ([], []))[1]
                p95 = results.get(f"p{i}p95", ([], []))[1]
                s.p50 = max(p50) if p50 else None
                s.p95 = max(p95) if p95 else None
    return MetricsView(namespace, minutes, start, end, series, percentiles)


# --- rendering -----------------------------------------------------------------------------------


def sparkline(values: list[float | None]) -> str:
    """One block per value, scaled from 0 to the largest; a blank where there is no data."""
    present = [v for v in values if v is not None]
    top = max(present, default=0.0)
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif top <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(value / top * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out)


def number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}"


UNITS = {"Seconds": "s", "Milliseconds": "ms", "Count/Second": "/s", "Count": ""}


def render(view: MetricsView, endpoint: str | None = None) -> str:
    head = (
        f"Feedlot metrics, last {view.minutes} min "
        f"({view.start:%Y-%m-%d %H:%M}–{view.end:%H:%M} UTC), namespace {view.namespace}, "
        f"{endpoint or 'AWS'}"
    )
    if not view.series:
        return head + "\n  no data in this window (nothing emitted yet, or another endpoint?)\n"
    rows = [("metric", "dimensions", "count", "sum", "avg", "max", "p50", "p95", "per minute")]
    for s in view.series:
        unit = UNITS.get(s.spec.unit, s.spec.unit) if s.spec else ""
        latency = s.spec is not None and s.spec.kind == "latency"
        pct = (lambda v: number(v)) if view.percentiles else (lambda v: "n/a")
        rows.append(
            (
                s.name + (f" ({unit})" if unit else ""),
                " ".join(f"{k}={v}" for k, v in s.dims) or "-",
                number(s.count),
                number(s.total) if s.spec is None or s.spec.kind in ("count", "rate") else "—",
                number(s.average),
                number(s.maximum),
                pct(s.p50) if latency else "",
                pct(s.p95) if latency else "",
                sparkline(s.per_minute),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head]
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:8], widths[2:8], strict=True)]
        cells.append(r[8])
        lines.append("  " + "  ".join(cells).rstrip())
    if not view.percentiles:
        lines.append(
            "  p50/p95: this CloudWatch endpoint does not compute percentiles (moto); avg and max"
            " are shown, and each run's own p50/p95 in EventToRowLatencyP50/P95"
        )
    return "\n".join(lines) + "\n"


def show(minutes: int = 15, namespace: str | None = None) -> str:
    """The view as text, for this environment's CloudWatch (``make demo`` prints it)."""
    from feedlot_pipeline.core.emf import emf_mirror
    from feedlot_pipeline.core.settings import ObservabilitySettings, Settings

    emf_mirror.flush(5)  # this process's own EMF lines, if it ran handlers
    ns = namespace or ObservabilitySettings().metrics_namespace
    return render(read_metrics(ns, minutes), Settings().aws_endpoint_url)


@click.command()
@click.option("--minutes", default=15, show_default=True, type=click.IntRange(1, 1440))
@click.option("--namespace", default=None, help="Default: FEEDLOT_METRICS_NAMESPACE (Feedlot).")
@click.option(
    "--local",
    "local_stack",
    is_flag=True,
    help="Read the local stack's variables (.feedlot/env) first: its moto server.",
)
def metrics(minutes: int, namespace: str | None, local_stack: bool) -> None:
    """The platform's CloudWatch metrics of the last MINUTES: count, sum, avg, max, p50/p95 of
    latencies, and a sparkline per minute."""
    if local_stack:
        from feedlot_pipeline.core.settings import export
        from feedlot_pipeline.local import stack

        try:
            export(stack.env(), override=False)
        except stack.ServiceError as err:
            raise click.ClickException(str(err)) from None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        text = show(minutes, namespace)
    except (BotoCoreError, ClientError) as err:
        raise click.ClickException(f"cannot read CloudWatch metrics: {err}") from None
    click.echo(text, nl=False)
