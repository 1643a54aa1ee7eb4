"""The analytics assets and checks in Dagster: the per-asset path (UI, backfills), the batch-run
contract (events logged by one op for many partitions), the guard on failed blocking checks."""

# Dagster reads the ops' context annotations: no postponed annotations here.

from datetime import date

import dagster as dg
import pytest

from feedlot_pipeline.analytics import outcomes, per_asset
from feedlot_pipeline.analytics.assets import FARM_DAY_ASSETS, REPORT_ASSETS
from feedlot_pipeline.analytics.checks import PARTITION_CHECKS
from feedlot_pipeline.analytics.curated import HISTORICO
from feedlot_pipeline.analytics.events import (
    blocked_by_checks,
    log_partition_events,
    partition_events,
)
from feedlot_pipeline.analytics.partition import refresh_partitions
from feedlot_pipeline.analytics.resources import AnalyticsResource
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.definitions import defs
from feedlot_pipeline.ingestion.partitions import (
    farm_day_key,
    farms_partitions,
)
from feedlot_pipeline.warehouse.checks import CHECK_NAME
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import consumo_record, load_records, s3_keys

D1 = date(2023, 1, 1)
KEY = str(farm_day_key("fazenda_um", D1))


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
        yield inst


def resources(env) -> dict:
    t = env.targets
    return {
        "warehouse": WarehouseResource(url=env.warehouse_url),
        "analytics": AnalyticsResource(
            bucket=t.bucket, glue_database=t.glue_database, events_topic=t.events_topic
        ),
    }


def records() -> list[dict]:
    return [
        consumo_record(lote="1", real=6.4),
        consumo_record(lote="2", curral="2", real=12.0),  # +89 %: an anomaly
    ]


def test_per_asset_path_materializes_and_checks(any_analytics_env, instance) -> None:
    env = any_analytics_env
    load_records(env, records())
    result = dg.materialize(
        [*FARM_DAY_ASSETS, *REPORT_ASSETS, *PARTITION_CHECKS],
        partition_key=KEY,
        instance=instance,
        resources=resources(env),
    )
    assert result.success
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    assert set(mats) == {
        "consumo_diario",
        "describe_consumo",
        "curated_historico_consumo",
        "curated_consumo_diario",
        "relatorio_fazenda",
    }
    meta = mats["describe_consumo"].materialization.metadata
    assert meta["rows"].value == 2
    assert meta["mean_consumo_real"].value == pytest.approx(9.2)
    assert meta["describe"].records[0].data["estatistica"] == "count"
    assert mats["consumo_diario"].materialization.metadata["dagster/row_count"].value == 2
    report = mats["relatorio_fazenda"].materialization.metadata
    assert report["report"].path.endswith("reports/fazenda_um/2023/01/01/relatorio.html")
    assert report["open_report"].url.startswith("http")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {c.check_key.name for c in PARTITION_CHECKS}
    assert checks["consumo_diario_anomalies"].passed is False
    assert checks["consumo_diario_anomalies"].severity == dg.AssetCheckSeverity.WARN
    assert all(e.passed for name, e in checks.items() if name != "consumo_diario_anomalies")
    assert env.targets.describe_key("fazenda_um", D1) in s3_keys(env.targets.bucket)


def test_row_count_check_fails_when_the_parquet_file_is_gone(analytics_env, instance) -> None:
    env = analytics_env
    load_records(env, records())
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(wh, env.targets, [("fazenda_um", D1)], notify=False)
    client("s3").delete_object(
        Bucket=env.targets.bucket, Key=HISTORICO.key("curated/", "fazenda_um", D1)
    )
    with Warehouse(env.warehouse_url) as wh:
        outcome = per_asset.stored_row_count_outcome(wh, env.targets, HISTORICO, "fazenda_um", D1)
    assert outcome.passed is False and outcome.metadata["warehouse_rows"] == 2
    assert "no Parquet file" in outcome.description


@dg.op(required_resource_keys={"warehouse", "analytics"})
def batch_analytics(context: dg.OpExecutionContext) -> int:
    """What the lead's batch run does after loading: one call for every partition, then events."""
    partitions = [("fazenda_um", D1), ("fazenda_dois", D1)]
    with context.resources.warehouse.open() as wh:
        results = refresh_partitions(
            wh, context.resources.analytics.targets(), partitions, run_id=context.run_id
        )
    log_partition_events(context, results)
    return len(results)


def test_batch_run_logs_materializations_and_checks_per_partition(analytics_env, instance):
    env = analytics_env
    load_records(env, [*records(), consumo_record("FazendaDois", lote="5", real=6.3)])
    job = dg.GraphDefinition(name="batch", node_defs=[batch_analytics]).to_job(
        resource_defs=resources(env)
    )
    result = job.execute_in_process(instance=instance)
    assert result.success
    for asset in ("consumo_diario", "describe_consumo", "curated_historico_consumo"):
        found = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
        assert sorted(r.partition_key for r in found) == sorted(
            [KEY, str(farm_day_key("fazenda_dois", D1))]
        )
    storage = instance.event_log_storage
    record = storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("consumo_diario"), outcomes.CHECK_ANOMALIES), limit=10
    )
    by_partition = {r.event.dagster_event.event_specific_data.partition: r for r in record}
    assert by_partition[KEY].event.dagster_event.event_specific_data.passed is False
    fazenda_dois = str(farm_day_key("fazenda_dois", D1))
    assert by_partition[fazenda_dois].event.dagster_event.event_specific_data.passed is True
    # The events name checks the code location defines.
    graph = defs.resolve_asset_graph()
    with Warehouse(env.warehouse_url) as wh:
        (one,) = refresh_partitions(wh, env.targets, [("fazenda_um", D1)], notify=False)
    for event in partition_events(one):
        if isinstance(event, dg.AssetCheckEvaluation):
            assert event.asset_check_key in graph.asset_check_keys
        else:
            assert event.asset_key in graph.get_all_asset_keys()


@dg.op
def failed_historico_check(context: dg.OpExecutionContext) -> None:
    context.log_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("historico_consumo"),
            check_name=CHECK_NAME,
            passed=False,
            partition=KEY,
        )
    )


def test_no_summary_on_a_partition_whose_blocking_check_failed(analytics_env, instance) -> None:
    env = analytics_env
    load_records(env, records())
    dg.GraphDefinition(
        name="loader", node_defs=[failed_historico_check]
    ).to_job().execute_in_process(instance=instance)
    assert blocked_by_checks(instance, KEY) == ["loaded_as_landed"]
    assert blocked_by_checks(instance, str(farm_day_key("fazenda_dois", D1))) == []
    result = dg.materialize(
        FARM_DAY_ASSETS,
        partition_key=KEY,
        instance=instance,
        resources=resources(env),
        selection=["consumo_diario"],
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "loaded_as_landed" in failure.description
    with Warehouse(env.warehouse_url) as wh, wh.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM consumo_diario")).scalar() == 0
