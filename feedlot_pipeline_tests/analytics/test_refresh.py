"""analytics_refresh_sensor → analytics_refresh_job: the partitions the load ledger says were
loaded get their analytics in one run, whatever the load path; a partition whose blocking check
failed is left out."""

# Dagster reads the ops' context annotations: no postponed annotations here.

import json
from datetime import date

import dagster as dg
import pytest
from sqlalchemy import text

from feedlot_pipeline.analytics.refresh import (
    JOB_NAME,
    analytics_refresh_job,
    build_analytics_refresh_sensor,
)
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.warehouse.checks import CHECK_NAME, HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import consumo_record, load_records, read_notices

D1 = date(2023, 1, 1)


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
        yield inst


@pytest.fixture(autouse=True)
def _full_priority(monkeypatch) -> None:
    """These runs execute in the test's own process: niced, they would slow the worker for good."""
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_NICE", "0")


def tick(instance, env, cursor=None) -> dg.SensorResult:
    sensor = build_analytics_refresh_sensor()
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"warehouse": WarehouseResource(url=env.warehouse_url)},
    )
    return sensor.evaluate_tick(context)


def run(instance, env, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    t = env.targets
    return analytics_refresh_job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags=request.tags,
        resources={
            "warehouse": WarehouseResource(url=env.warehouse_url),
            "analytics": AnalyticsResource(
                bucket=t.bucket, glue_database=t.glue_database, events_topic=t.events_topic
            ),
        },
    )


def test_loaded_partitions_get_their_analytics_in_one_run(
    analytics_env, instance, monkeypatch
) -> None:
    env = analytics_env
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_SETTLE_SECONDS", "0")
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_MAX_DUTY", "1")  # no rest between refreshes
    load_records(
        env,
        [
            consumo_record(lote="1"),
            consumo_record("FazendaDois", lote="2"),
            consumo_record(day="2023-01-02", lote="3"),
        ],
    )
    first = tick(instance, env)
    (request,) = first.run_requests
    config = request.run_config["ops"]["refresh_loaded_partitions"]["config"]
    assert config["partitions"] == [
        "fazenda_dois/2023-01-01",
        "fazenda_um/2023-01-01",
        "fazenda_um/2023-01-02",
    ]
    assert request.job_name == JOB_NAME and request.tags["feedlot/lane"] == "analytics"

    # A failed blocking check on one partition (as a batch run would log it) leaves it out.
    blocked = str(farm_day_key("fazenda_um", date(2023, 1, 2)))
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=HISTORICO_CONSUMO, check_name=CHECK_NAME, passed=False, partition=blocked
        )
    )
    result = run(instance, env, request)
    assert result.success
    mats = result.get_asset_materialization_events()
    summaries = {m.partition for m in mats if m.asset_key == dg.AssetKey("consumo_diario")}
    partitions = {
        str(dg.MultiPartitionKey({"fazenda": f, "dia": "2023-01-01"}))
        for f in ("fazenda_um", "fazenda_dois")
    }
    assert summaries == partitions
    # Logged in batches: 4 materializations and 4 check evaluations per partition, each with
    # its partition, and every one stored by the instance.
    assert len(mats) == 4 * 2
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 4 * 2 and {e.partition for e in evaluations} == partitions
    stored = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    assert len(stored) == 4 * 2
    with Warehouse(env.warehouse_url) as wh, wh.engine.connect() as conn:
        rows = conn.execute(text("SELECT fazenda, dia FROM consumo_diario ORDER BY 1, 2")).all()
    assert [(f, str(d)) for f, d in rows] == [
        ("fazenda_dois", "2023-01-01"),
        ("fazenda_um", "2023-01-01"),
    ]
    notices = read_notices(env.events_queue_url, 2)
    assert sorted(n["fazenda"] for n in notices) == ["fazenda_dois", "fazenda_um"]

    # Nothing loaded since: the cursor moved on, no run.
    again = tick(instance, env, cursor=first.cursor)
    assert again.run_requests == [] and json.loads(again.cursor)["until"]
    # A new load of one partition: a run for that one alone.
    load_records(env, [consumo_record(lote="4")], event_id="e2")
    later = tick(instance, env, cursor=again.cursor)
    (request,) = later.run_requests
    assert request.run_config["ops"]["refresh_loaded_partitions"]["config"]["partitions"] == [
        "fazenda_um/2023-01-01"
    ]


def test_no_new_run_while_one_is_in_flight(analytics_env, instance, monkeypatch) -> None:
    env = analytics_env
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_SETTLE_SECONDS", "0")
    load_records(env, [consumo_record(lote="1")])
    (request,) = tick(instance, env).run_requests
    instance.create_run_for_job(
        analytics_refresh_job,
        run_config=request.run_config,
        status=dg.DagsterRunStatus.STARTED,
    )
    skipped = tick(instance, env)
    assert skipped.run_requests == [] and "in flight" in skipped.skip_message


def test_the_lane_rests_after_a_refresh_as_its_duty_share_says(
    analytics_env, instance, monkeypatch
) -> None:
    """After a refresh of D seconds the next waits D × (1/share − 1) s; the partitions loaded
    meanwhile wait with the cursor and go in the next refresh."""
    env = analytics_env
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_SETTLE_SECONDS", "0")
    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_MAX_DUTY", "0.001")  # rest 999 × the run
    load_records(env, [consumo_record(lote="1")])
    first = tick(instance, env)
    (request,) = first.run_requests
    assert run(instance, env, request).success
    load_records(env, [consumo_record(lote="2")], event_id="e2")

    resting = tick(instance, env, cursor=first.cursor)
    assert resting.run_requests == []
    assert "resting" in resting.skip_message and "MAX_DUTY=0.001" in resting.skip_message
    assert resting.cursor == first.cursor  # unchanged: the new load waits for the next refresh

    monkeypatch.setenv("FEEDLOT_ANALYTICS_REFRESH_MAX_DUTY", "1")
    (request,) = tick(instance, env, cursor=first.cursor).run_requests
    assert request.run_config["ops"]["refresh_loaded_partitions"]["config"]["partitions"] == [
        "fazenda_um/2023-01-01"
    ]


@pytest.mark.parametrize(("setting", "added"), [(None, 10), ("0", 0), ("3", 3)])
def test_a_refresh_run_lowers_its_own_cpu_priority(setting, added) -> None:
    """A refresh run's process yields the CPU to the loads (niceness + 10 unless configured);
    run in a process of its own, as Dagster launches runs, since niceness never goes back."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FEEDLOT_ANALYTICS_REFRESH_NICE"}
    if setting is not None:
        env["FEEDLOT_ANALYTICS_REFRESH_NICE"] = setting
    code = (
        "import os; from feedlot_pipeline.analytics.refresh import yield_the_cpu; "
        "from feedlot_pipeline.core.settings import AnalyticsSettings; "
        "before = os.nice(0); "
        "after = yield_the_cpu(AnalyticsSettings().analytics_refresh_nice); "
        "print(before, after, os.nice(0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    before, after, now = map(int, out)
    assert after == now == min(before + added, 19)
