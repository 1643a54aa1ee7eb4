"""``feedlot metrics``: metrics emitted to moto's CloudWatch, read back and shown per series.

Dimension values are unique per test too: moto 5.2.5's GetMetricData ignores the namespace of a
query that has dimensions, so other tests' series with the same name and dimensions would count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from feedlot_pipeline.core import metrics as m
from feedlot_pipeline.local.services import free_port
from feedlot_pipeline.tools.metrics import read_metrics, render, sparkline

FEEDLOT = Path(sys.executable).with_name("feedlot")


def _emit(now: datetime, tag: str) -> None:
    m.record_load(
        job=f"ingest-{tag}",
        seconds=4.0,
        loaded=120,
        inserted=100,
        updated=5,
        unchanged=15,
        rejected=4,
        partitions=6,
        latency=m.event_to_row_latency(
            [(now - timedelta(seconds=8), now, 100), (now - timedelta(seconds=40), now, 20)]
        ),
    )
    for minutes_ago, value in ((3, 10.0), (1, 30.0), (1, 20.0)):
        buffer = m.MetricsBuffer(timestamp=now - timedelta(minutes=minutes_ago))
        buffer.add("RecordsReceived", value, Source=f"api-{tag}")
        buffer.flush()


def test_view_reads_back_counts_sums_and_minutes(metrics_ns: str) -> None:
    now = datetime.now(timezone.utc)
    tag = metrics_ns[-8:]
    _emit(now, tag)
    view = read_metrics(metrics_ns, 10, now=now)
    by_name = {(s.name, s.dims): s for s in view.series}
    received = by_name[("RecordsReceived", (("Source", f"api-{tag}"),))]
    assert (received.count, received.total, received.maximum) == (3, 60, 30)
    # one character per minute: 10 at 3 min ago, 30 + 20 at 1 min ago, nothing else
    assert [v for v in received.per_minute if v is not None] == [10.0, 50.0]
    assert received.per_minute.index(10.0) == received.per_minute.index(50.0) - 2
    latency = by_name[("EventToRowLatency", (("Job", f"ingest-{tag}"),))]
    assert latency.count == 120 and latency.maximum == 40
    assert abs(latency.average - (100 * 8 + 20 * 40) / 120) < 0.01
    assert view.percentiles is False  # moto 5.2 computes no percentile statistics

    text = render(view, "http://moto")
    lines = {line.split()[0]: line for line in text.splitlines()[2:] if line.startswith("  ")}
    assert "RecordsReceived" in lines and lines["RecordsReceived"].split()[2:4] == ["3", "60"]
    assert "EventToRowLatencyP95" in text and "n/a" in lines["EventToRowLatency"]
    assert "does not compute percentiles" in text
    assert text.splitlines()[0].startswith("Feedlot metrics, last 10 min")


def test_command_prints_the_view_and_explains_an_unreachable_endpoint(metrics_ns: str) -> None:
    tag = metrics_ns[-8:]
    _emit(datetime.now(timezone.utc), tag)
    done = subprocess.run(
        [str(FEEDLOT), "metrics", "--minutes", "5", "--namespace", metrics_ns],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "RowsInserted" in done.stdout and f"Job=ingest-{tag}" in done.stdout

    empty = subprocess.run(
        [str(FEEDLOT), "metrics", "--namespace", metrics_ns + "-none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 0 and "no data in this window" in empty.stdout

    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    down = subprocess.run(
        [str(FEEDLOT), "metrics", "--namespace", metrics_ns],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert down.returncode == 1 and "cannot read CloudWatch metrics" in down.stderr
    assert "Traceback" not in down.stderr


def test_sparkline_scales_from_zero_and_leaves_gaps() -> None:
    assert sparkline([None, 0.0, 5.0, 10.0]) == " ▁▅█"
    assert sparkline([0.0, 0.0]) == "▁▁"
    assert sparkline([None, None]) == "  "
