"""The dashboards: generated from code, committed as generated, and every panel and widget names a
metric of the registry that the code really emits (run here, read back from moto's CloudWatch)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from feedlot_pipeline.core import metric_registry as registry
from feedlot_pipeline.core import metrics as m
from feedlot_pipeline.core.emf import emf_mirror
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.lambdas import sns_handler
from feedlot_pipeline.observability import dashboards
from feedlot_pipeline.observability.panels import all_panels
from feedlot_pipeline.observability.sensors import (
    build_backlog_metrics_sensor,
    build_farm_freshness_sensor,
)
from feedlot_pipeline.warehouse.assets import HISTORICO_CONSUMO
from feedlot_pipeline_tests.deploy.cfn import TEMPLATE_DIR, load_template
from feedlot_pipeline_tests.helpers import (
    Context,
    jsonl,
    make_drops,
    metric_names,
    record,
    sns_event,
)
from feedlot_pipeline_tests.lambdas.test_api_handler import api_event, call, mixed_batch

SEARCH = re.compile(
    r"SEARCH\('\{(?P<ns>\$\{[^}]+\}|[^,]+),(?P<dims>[^}]*)\} MetricName=\"(?P<name>[^\"]+)\""
)


def grafana_series() -> set[tuple[str, str, tuple[str, ...]]]:
    """(namespace, metric, dimension names) of every target of the committed Grafana JSON."""
    board = json.loads(dashboards.GRAFANA_PATH.read_text())
    out = set()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            namespace = target["namespace"].replace("$namespace", registry.FEEDLOT)
            out.add((namespace, target["metricName"], tuple(sorted(target["dimensions"]))))
    return out


def cloudwatch_series() -> set[tuple[str, str, tuple[str, ...]]]:
    """The same for every metric widget of the committed CloudWatch dashboard (monitoring.yaml)."""
    template = load_template(TEMPLATE_DIR / "monitoring.yaml")
    body = template["Resources"]["OverviewDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    out = set()
    widgets = json.loads(body)["widgets"]
    assert sum(w["type"] == "metric" for w in widgets) == len(all_panels())
    for widget in widgets:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict):  # a SEARCH expression
                found = SEARCH.search(row[0]["expression"])
                assert found, row
                namespace = found["ns"].replace("${MetricsNamespace}", registry.FEEDLOT)
                dims = tuple(sorted(found["dims"].split(",")))
                out.add((namespace, found["name"], dims))
                continue
            namespace = row[0].replace("${MetricsNamespace}", registry.FEEDLOT)
            names = [x for x in row[2:] if not isinstance(x, dict)][::2]
            out.add((namespace, row[1], tuple(sorted(names))))
    return out


def test_committed_dashboards_are_what_the_code_generates() -> None:
    assert dashboards.write(check=True) == [], "run `feedlot dashboards` and commit the result"
    feedlot = Path(sys.executable).with_name("feedlot")
    done = subprocess.run(
        [str(feedlot), "dashboards", "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploy/grafana/feedlot-overview.json: up to date" in done.stdout


def test_check_mode_notices_a_stale_dashboard(tmp_path: Path, monkeypatch) -> None:
    stale = tmp_path / "feedlot-overview.json"
    stale.write_text("{}\n")
    template = tmp_path / "monitoring.yaml"
    template.write_text(dashboards.TEMPLATE_PATH.read_text())
    monkeypatch.setattr(dashboards, "GRAFANA_PATH", stale)
    monkeypatch.setattr(dashboards, "TEMPLATE_PATH", template)
    assert dashboards.write(check=True) == [stale]
    assert stale.read_text() == "{}\n"  # check writes nothing
    assert dashboards.write() == [stale]
    assert dashboards.write(check=True) == []


def test_every_panel_and_widget_names_a_registered_metric_with_its_dimensions() -> None:
    grafana, cloudwatch = grafana_series(), cloudwatch_series()
    assert grafana == cloudwatch  # one description, two renderings
    for namespace, name, dims in grafana:
        spec = registry.spec(name, namespace)
        assert not spec.planned, f"{name} is planned: nothing emits it yet"
        assert dims == tuple(sorted(spec.dimensions)), (name, dims, spec.dimensions)
    ours = {name for namespace, name, _ in grafana if namespace == registry.FEEDLOT}
    assert len(ours) >= 20  # the dashboards do show the platform's own metrics


def test_every_dashboard_metric_is_emitted_by_the_code(
    aws, warehouse_url, metrics_ns: str, monkeypatch, request
) -> None:
    """Run every emitter once into this test's namespace; ListMetrics must then hold every
    (metric, dimension names) that a dashboard reads from the platform's namespace."""
    settings, _ = aws
    drops = make_drops(monkeypatch, request)
    # Lambdas: SNS, API (accepted, refused, 503), file drops (landed, large), SNS failure.
    sns_handler.handler(sns_event(json.dumps([record()])), Context())
    assert call(api_event(json.dumps(mixed_batch())))[0] == 202
    assert call(api_event(None, method="GET"))[0] == 405
    drops.put("incoming/a.jsonl", jsonl([record(lote="7")]) + b"{bad\n")
    drops.deliver()
    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "50")
    drops.put("incoming/big.jsonl", jsonl([record(lote=str(i)) for i in range(5)]))
    drops.deliver()
    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "0")
    drops.put("incoming/fails.jsonl", jsonl([record()]))
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")  # landing fails
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        sns_handler.handler(sns_event(json.dumps(record())), Context())
    assert call(api_event(json.dumps(record())))[0] == 503
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        drops.deliver()
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", settings.lake_bucket)
    assert emf_mirror.flush(10)
    # The batch load run (the call the loader makes) and the worker job.
    now = datetime.now(timezone.utc)
    m.record_load(
        job="ingest_consumption_job",
        seconds=2.0,
        loaded=3,
        inserted=3,
        updated=0,
        unchanged=0,
        rejected=1,
        partitions=1,
        latency=m.event_to_row_latency([(now - timedelta(seconds=5), now, 3)]),
        rows_by_farm={"fazenda_um": 3},
    )
    m.record_worker_job(job="bulk_import", seconds=1.0, records=10)
    # The observability sensors.
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(farms_partitions.name, ["fazenda_um"])
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=HISTORICO_CONSUMO,
                partition=str(farm_day_key("fazenda_um", "2024-03-18")),
                metadata={"loaded": 3},
            )
        )
        for sensor in (build_backlog_metrics_sensor(), build_farm_freshness_sensor()):
            sensor.evaluate_tick(dg.build_sensor_context(instance=instance))

    emitted = {(name, tuple(sorted(k for k, _ in dims))) for name, dims in metric_names(metrics_ns)}
    wanted = {(name, dims) for ns, name, dims in grafana_series() if ns == registry.FEEDLOT}
    assert wanted - emitted == set()
    # and every series value the dashboards name explicitly was emitted too (Source, Queue)
    explicit = {
        (s.metric, s.dims)
        for p in all_panels()
        for s in p.series
        if s.namespace == registry.FEEDLOT and not s.searches
    }
    assert explicit - set(metric_names(metrics_ns)) == set()
