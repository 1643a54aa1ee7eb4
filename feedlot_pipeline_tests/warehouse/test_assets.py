"""historico_consumo and its checks, materialized against moto and a real PostgreSQL."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from feedlot_pipeline.ingestion.assets import raw_consumption
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.ingestion.partitions import (
    farm_day_key,
    farm_day_partitions,
    farms_partitions,
)
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.warehouse.assets import historico_consumo
from feedlot_pipeline.warehouse.checks import historico_checks
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline_tests.helpers import (
    CLIENTS,
    DAY,
    NOW,
    batch,
    expected_valid,
    mat_metadata,
    materialize,
    record,
)


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
        yield inst


def test_load_is_idempotent_and_checks_pass(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    records = batch()
    land_records(
        records,
        source="sns",
        event_id="e1",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
        correlation_id="trace-e1",
    )
    first = materialize(instance, settings, warehouse_url)
    assert first.success
    meta = mat_metadata(first)
    valid = expected_valid(records)
    assert meta["landed"] == len(records)
    assert meta["loaded"] == meta["inserted"] == valid
    assert meta["rejected"] == len(records) - valid
    assert meta["rejected_by_reason"]["duplicate"] == 1
    assert all(check_results(first).values()) and len(check_results(first)) == 4

    # The same event redelivered as a new message: nothing new is written.
    land_records(
        records, source="sns", event_id="e2", clients=CLIENTS, settings=settings, received_at=NOW
    )
    second = materialize(instance, settings, warehouse_url)
    meta2 = mat_metadata(second)
    assert (meta2["inserted"], meta2["updated"]) == (0, 0)
    assert meta2["landed"] == 2 * len(records)
    assert meta2["rejected"] == 2 * len(records) - valid
    assert all(check_results(second).values())

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == valid
        ids = conn.execute(text("SELECT id_curral FROM historico_consumo")).scalars().all()
        # The ingest's correlation id follows each record: the first landing's on every row
        # (the redelivery changed nothing), each landing's own on its rejections.
        row_traces = conn.execute(text("SELECT DISTINCT correlation_id FROM historico_consumo"))
        rejected_traces = conn.execute(
            text(
                "SELECT correlation_id, count(*) FROM historico_consumo_rejeitados "
                "GROUP BY correlation_id"
            )
        )
        assert row_traces.scalars().all() == ["trace-e1"]
        assert dict(rejected_traces.all()) == {
            "trace-e1": len(records) - valid,
            "e2": len(records),
        }
    engine.dispose()
    assert set(ids) == {"25994051003275"}  # 14-digit ids intact, as text


def test_checks_fail_on_a_tampered_warehouse(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    land_records(
        batch(), source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )
    assert materialize(instance, settings, warehouse_url).success
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE historico_consumo SET consumo_meta = consumo_meta + 1"))
        conn.execute(
            text("DELETE FROM historico_consumo_rejeitados WHERE reason_code = 'duplicate'")
        )
    engine.dispose()
    consistency = [c for c in historico_checks if "meta" in c.check_key.name]
    reconcile = [c for c in historico_checks if "reconcile" in c.check_key.name]
    checks_only = dg.define_asset_job(
        "checks_only",
        selection=dg.AssetSelection.checks(*consistency, *reconcile),
        partitions_def=farm_day_partitions,
    )
    job = dg.Definitions(
        assets=[raw_consumption, historico_consumo],
        asset_checks=historico_checks,
        jobs=[checks_only],
        resources={
            "lake": LakeResource(bucket=settings.lake_bucket),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
    ).resolve_job_def("checks_only")
    # A checks-only job loses its partitions definition in this Dagster version; the run's
    # partition tag is what the checks read, as in a UI-launched check run.
    result = job.execute_in_process(
        tags={"dagster/partition": str(farm_day_key("fazenda_um", DAY))},
        instance=instance,
        raise_on_error=False,
    )
    assert check_results(result) == {
        "historico_consumo_meta_consistent": False,
        "historico_reconciles_with_raw": False,
    }


def test_unrouted_partition_rejects_everything_with_reasons(aws, warehouse_url, instance) -> None:
    settings, _ = aws
    instance.add_dynamic_partitions(farms_partitions.name, ["_unrouted"])
    records = [record("FazendaX"), "not json at all", record(day="2023-13-45")]
    notices = land_records(
        records, source="sns", event_id="u", clients=CLIENTS, settings=settings, received_at=NOW
    )
    days = {n.dia for n in notices}
    for day in days:
        result = materialize(
            instance, settings, warehouse_url, "_unrouted", date.fromisoformat(day)
        )
        assert result.success
        meta = mat_metadata(result)
        assert meta["loaded"] == 0 and meta["rejected"] == meta["landed"]
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        codes = (
            conn.execute(
                text("SELECT reason_code FROM historico_consumo_rejeitados ORDER BY reason_code")
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert codes == sorted(["unknown_client", "not_an_object", "invalid_data"])
