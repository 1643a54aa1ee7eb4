"""core.metric_registry, core.metrics, core.emf: the registry, the buffer's PutMetricData batches,
latency statistics, EMF.

Against the moto server's CloudWatch: what is emitted is read back with GetMetricStatistics /
ListMetrics, in a namespace of each test's own (``metrics_ns``).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from feedlot_pipeline.core import emf
from feedlot_pipeline.core import metric_registry as registry
from feedlot_pipeline.core import metrics as m
from feedlot_pipeline.core.settings import ObservabilitySettings
from feedlot_pipeline.local.services import free_port
from feedlot_pipeline_tests.helpers import metric_names, metric_stats

T0 = datetime(2024, 3, 18, 12, 0, tzinfo=timezone.utc)


# --- registry ----------------------------------------------------------------------------------


def test_registry_names_are_unique_and_low_cardinality() -> None:
    assert len(registry.REGISTRY) == len(registry.SPECS)
    allowed = {"Source", "Job", "Queue", "Fazenda"}
    for spec in registry.SPECS:
        if spec.ours:
            assert set(spec.dimensions) <= allowed, spec
            assert spec.unit in {
                registry.COUNT,
                registry.SECONDS,
                registry.MILLISECONDS,
                registry.PER_SECOND,
            }, spec
    # The only per-farm series; everything else has a handful of values per dimension.
    assert [s.name for s in registry.SPECS if "Fazenda" in s.dimensions] == ["FarmRowsLoaded"]


def test_unknown_names_and_wrong_dimensions_are_programming_errors() -> None:
    buffer = m.MetricsBuffer()
    with pytest.raises(KeyError, match="not in core.metric_registry.REGISTRY"):
        buffer.add("RowsLoadedd", 1, Job="j")
    with pytest.raises(ValueError, match="dimensions"):
        buffer.add("RowsLoaded", 1, Source="sns")
    with pytest.raises(ValueError, match="dimensions"):
        buffer.add("RowsLoaded", 1, Job="j", Fazenda="f")  # a farm on a per-job metric


# --- the buffer against CloudWatch ---------------------------------------------------------------


def test_buffer_sends_values_and_distributions_read_back(metrics_ns: str) -> None:
    buffer = m.MetricsBuffer()
    buffer.add("RowsLoaded", 120, Job="j1")
    buffer.add("RowsLoaded", 30, Job="j1")  # same series: a second sample
    buffer.add("RowsLoaded", 7, Job="j2")
    buffer.add_distribution("EventToRowLatency", {1.5: 3, 40.0: 1}, Job="j1")
    result = buffer.flush()
    assert (result.sent, result.dropped, result.requests) == (5, 0, 1)
    assert len(buffer) == 0  # flushed values are forgotten

    assert metric_stats(metrics_ns, "RowsLoaded", Job="j1") == {
        "Sum": 150.0,
        "SampleCount": 2.0,
        "Minimum": 30.0,
        "Maximum": 120.0,
    }
    assert metric_stats(metrics_ns, "RowsLoaded", Job="j2")["Sum"] == 7.0
    latency = metric_stats(metrics_ns, "EventToRowLatency", Job="j1")
    assert latency == {"Sum": 44.5, "SampleCount": 4.0, "Minimum": 1.5, "Maximum": 40.0}
    assert metric_names(metrics_ns) == {
        ("RowsLoaded", (("Job", "j1"),)),
        ("RowsLoaded", (("Job", "j2"),)),
        ("EventToRowLatency", (("Job", "j1"),)),
    }


def test_buffer_splits_requests_at_1000_values_and_150_per_datum(metrics_ns: str) -> None:
    buffer = m.MetricsBuffer()
    buffer.add_distribution("EventToRowLatency", {float(i + 1): 2 for i in range(2500)}, Job="b")
    requests = buffer.metric_data()
    assert [sum(len(d["Values"]) for d in r) for r in requests] == [1000, 1000, 500]
    assert all(len(d["Values"]) <= 150 for r in requests for d in r)
    result = buffer.flush()
    assert (result.sent, result.requests, result.dropped) == (2500, 3, 0)
    stats = metric_stats(metrics_ns, "EventToRowLatency", Job="b")
    assert stats["SampleCount"] == 5000  # counts travel: 2 per value
    assert stats["Sum"] == 2 * sum(range(1, 2501))


def test_invalid_values_are_dropped_alone_and_reported(metrics_ns: str) -> None:
    buffer = m.MetricsBuffer()
    buffer.add("RowsLoaded", float("nan"), Job="j")
    buffer.add("RowsLoaded", float("inf"), Job="j")
    buffer.add("RowsLoaded", 3, Job="j")
    result = buffer.flush()
    assert (result.sent, result.dropped) == (1, 2)
    assert metric_stats(metrics_ns, "RowsLoaded", Job="j")["Sum"] == 3.0


def test_cloudwatch_outage_never_raises_and_is_logged(
    metrics_ns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("FEEDLOT_METRICS_TIMEOUT_SECONDS", "1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="feedlot.metrics"):
        result = m.record_load(
            job="ingest", seconds=3.0, loaded=10, inserted=10, updated=0, unchanged=0, rejected=1
        )
    elapsed = time.monotonic() - started
    assert result.sent == 0 and result.dropped == 8 and result.errors
    assert elapsed < 10, f"an outage cost the load {elapsed:.1f} s"
    (warning,) = [r for r in caplog.records if r.name == "feedlot.metrics"]
    assert "metrics dropped" in warning.getMessage() and "8 value(s)" in warning.getMessage()


def test_disabled_metrics_send_nothing(metrics_ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDLOT_METRICS_ENABLED", "false")
    result = m.record_worker_job(job="bulk_import", seconds=2.0, records=100)
    assert (result.sent, result.dropped) == (0, 3)
    assert metric_names(metrics_ns) == set()


# --- latency -----------------------------------------------------------------------------------


def test_event_to_row_latency_weights_objects_by_rows() -> None:
    samples = [
        (T0, T0 + timedelta(seconds=2), 90),  # 90 rows 2 s after landing
        (T0, T0 + timedelta(seconds=30), 9),
        (T0, T0 + timedelta(seconds=600), 1),
        (T0, T0 + timedelta(seconds=5), 0),  # no rows: ignored
    ]
    stats = m.event_to_row_latency(samples)
    assert (stats.rows, stats.p50, stats.p95, stats.minimum, stats.maximum) == (
        100,
        2.0,
        30.0,
        2.0,
        600.0,
    )
    assert stats.histogram == {2.0: 90, 30.0: 9, 600.0: 1}


def test_event_to_row_latency_naive_times_skew_and_empty() -> None:
    naive = T0.replace(tzinfo=None)
    stats = m.event_to_row_latency(
        [(naive, T0 + timedelta(seconds=1.23456)), (T0 + timedelta(seconds=5), T0)]
    )
    assert stats.rows == 2 and stats.minimum == 0.0 and stats.maximum == 1.23  # 3 significant
    assert m.event_to_row_latency([]) == m.LatencyStats(0, None, None, None, None, {})


def test_scaled_distribution_keeps_percentiles() -> None:
    histogram = {1.0: 500_000, 2.0: 400_000, 10.0: 90_000, 60.0: 10_000}
    scaled = m.scale_counts(histogram, m.LATENCY_MAX_SAMPLES)
    assert sum(scaled.values()) <= m.LATENCY_MAX_SAMPLES + len(histogram)
    for q in (50, 90, 95, 99.5):
        assert m.percentile(scaled, q) == m.percentile(histogram, q)


def test_record_load_emits_every_load_metric(metrics_ns: str) -> None:
    latency = m.event_to_row_latency([(T0, T0 + timedelta(seconds=4), 300)])
    result = m.record_load(
        job="ingest_batch",
        seconds=12.5,
        loaded=300,
        inserted=200,
        updated=40,
        unchanged=60,
        rejected=7,
        redelivered=5,
        partitions=3,
        latency=latency,
        rows_by_farm={"fazenda_um": 250, "fazenda_dois": 50},
    )
    assert result.dropped == 0 and result.requests == 1
    job = (("Job", "ingest_batch"),)
    names = metric_names(metrics_ns)
    assert {n for n, d in names if d == job} == {
        s.name for s in registry.SPECS if s.emitter == registry._LOAD and s.dimensions == ("Job",)
    }
    assert ("FarmRowsLoaded", (("Fazenda", "fazenda_dois"),)) in names
    assert metric_stats(metrics_ns, "RowsRejected", Job="ingest_batch")["Sum"] == 7
    assert metric_stats(metrics_ns, "EventToRowLatencyP95", Job="ingest_batch")["Maximum"] == 4.0
    distribution = metric_stats(metrics_ns, "EventToRowLatency", Job="ingest_batch")
    assert distribution["SampleCount"] == 300 and distribution["Maximum"] == 4.0


# --- EMF -----------------------------------------------------------------------------------------


def _powertools_document(namespace: str) -> dict:
    provider = AmazonCloudWatchEMFProvider(namespace=namespace)
    provider.service = None
    metrics = Metrics(provider=provider)
    metrics.add_dimension(name="Source", value="api")
    metrics.add_metric(name="RecordsReceived", unit="Count", value=3)
    metrics.add_metric(name="LandingLatency", unit="Milliseconds", value=12.5)
    metrics.add_metric(name="LandingLatency", unit="Milliseconds", value=20.0)
    return json.loads(json.dumps(metrics.serialize_metric_set()))  # as printed


def test_emf_document_translates_as_cloudwatch_logs_would() -> None:
    doc = _powertools_document("NS")
    data = emf.emf_to_metric_data(doc)
    assert list(data) == ["NS"]
    by_name = {d["MetricName"]: d for d in data["NS"]}
    assert by_name["RecordsReceived"]["Values"] == [3.0]
    assert sorted(by_name["LandingLatency"]["Values"]) == [12.5, 20.0]
    assert by_name["LandingLatency"]["Unit"] == "Milliseconds"
    assert by_name["LandingLatency"]["Dimensions"] == [{"Name": "Source", "Value": "api"}]
    stamp = by_name["RecordsReceived"]["Timestamp"]
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 60
    assert emf.emf_to_metric_data({"_aws": {}}) == {}


def test_emf_mirror_sends_in_the_background(metrics_ns: str) -> None:
    mirror = emf.EmfMirror(interval=0.1)
    settings = ObservabilitySettings()
    for _ in range(3):
        mirror.submit(_powertools_document(metrics_ns), settings)
    assert mirror.flush(10)
    stats = metric_stats(metrics_ns, "LandingLatency", Source="api")
    assert stats["SampleCount"] == 6 and stats["Maximum"] == 20.0
    assert metric_stats(metrics_ns, "RecordsReceived", Source="api")["Sum"] == 9
