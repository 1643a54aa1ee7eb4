"""refresh_partitions against the moto server and a real warehouse (PostgreSQL; MySQL/MariaDB when
FEEDLOT_TEST_MYSQL_URL is set): summary rows, describe CSV, Parquet, Glue, notices, reruns."""

from __future__ import annotations

import io
from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from feedlot_pipeline.analytics.catalog import partition_values
from feedlot_pipeline.analytics.curated import DIARIO, HISTORICO
from feedlot_pipeline.analytics.describe import COLUMNS, STATISTICS
from feedlot_pipeline.analytics.partition import refresh_partitions
from feedlot_pipeline.analytics.targets import AnalyticsOutputError
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import PartitionLoadedNotice
from feedlot_pipeline.local.services import free_port
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import (
    consumo_record,
    load_records,
    read_notices,
    record,
    s3_keys,
)

D1, D2 = date(2023, 1, 1), date(2023, 1, 2)
META = round(360.0 * 0.0176, 6)  # consumo_meta of consumo_record()


def sample() -> list[dict]:
    """fazenda_um: 2 days; lot 1 reported twice on D1 (00:00 and 12:00), lot 3 anomalous (+50 %).
    fazenda_dois: one day. Plus two rejected records on fazenda_um D1."""
    twice = {**consumo_record(lote="1", real=6.0, animals=50), "data": "2023-01-01 12:00:00 UTC"}
    return [
        consumo_record(lote="1", real=7.0, animals=50),
        twice,
        consumo_record(lote="2", curral="111", real=6.4, animals=30),
        consumo_record(lote="3", curral="222", real=META * 1.5, animals=10),
        consumo_record(day="2023-01-02", lote="1", real=6.3, animals=50),
        consumo_record("FazendaDois", lote="9", curral="999", real=6.2, animals=80),
        {**record(lote="97"), "peso_medio": -1},
        {k: v for k, v in record(lote="98").items() if k != "id_raca"},
    ]


def summary_rows(url: str) -> list[tuple]:
    with Warehouse(url) as wh, wh.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT fazenda, dia, id_lote, id_curral, registros, quantidade_animais, "
                    "consumo_real_cabeca, consumo_meta_cabeca, desvio_pct, consumo_total_kg, "
                    "peso_medio, dia_confinamento, regra_consumo_meta, ultimo_processamento "
                    "FROM consumo_diario ORDER BY fazenda, dia, id_lote, id_curral"
                )
            )
        ]


def parquet(bucket: str, key: str):
    body = client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_table(io.BytesIO(body))


def test_refresh_writes_summary_describe_parquet_catalog_and_notices(any_analytics_env) -> None:
    env = any_analytics_env
    parts = load_records(env, sample(), correlation_id="trace-1")
    assert parts == [("fazenda_dois", D1), ("fazenda_um", D1), ("fazenda_um", D2)]

    with Warehouse(env.warehouse_url) as wh:
        results = refresh_partitions(wh, env.targets, parts, run_id="run-1")
    by_part = {(r.fazenda, r.dia): r for r in results}

    # consumo_diario: lot 1 on D1 combines its two reports, weighted by animals.
    rows = {(r[0], r[1], r[2]): r for r in summary_rows(env.warehouse_url)}
    assert len(rows) == 5
    lot1 = rows[("fazenda_um", D1, "1")]
    assert lot1[4:6] == (2, 100)  # registros, quantidade_animais
    assert lot1[6] == pytest.approx((7.0 * 50 + 6.0 * 50) / 100)
    assert lot1[7] == pytest.approx(META)
    assert lot1[8] == pytest.approx(100 * (6.5 - META) / META, abs=1e-5)
    assert lot1[9] == pytest.approx(650.0)
    assert lot1[12] == "peso_medio_pct_1_76"
    lot3 = rows[("fazenda_um", D1, "3")]
    assert lot3[8] == pytest.approx(50.0, abs=1e-4)

    um = by_part[("fazenda_um", D1)]
    assert (um.counts.rows, um.counts.lots, um.counts.rejected) == (4, 3, 2)
    checks = {c.name: c for c in um.checks}
    assert checks["consumo_diario_reconciles"].passed
    assert checks["curated_historico_row_count"].passed
    assert checks["curated_diario_row_count"].passed
    anomaly = checks["consumo_diario_anomalies"]
    assert not anomaly.passed and anomaly.severity == "WARN"
    assert [lot["id_lote"] for lot in anomaly.metadata["lots"]] == ["3"]
    assert by_part[("fazenda_um", D2)].passed
    assert all(c.passed for c in by_part[("fazenda_um", D2)].checks)

    # Describe CSV: statistics × columns, a real header, count = rows.
    key = env.targets.describe_key("fazenda_um", D1)
    assert um.outputs["describe_consumo"] == f"s3://{env.targets.bucket}/{key}"
    body = client("s3").get_object(Bucket=env.targets.bucket, Key=key)["Body"].read()
    frame = pd.read_csv(io.BytesIO(body), index_col=0)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame.index) == list(STATISTICS)
    assert frame.loc["count", "consumo_real"] == 4
    assert frame.loc["mean", "consumo_real"] == pytest.approx((7.0 + 6.0 + 6.4 + META * 1.5) / 4)
    assert um.materializations["describe_consumo"]["rows"] == 4

    # Parquet: Hive-style keys, typed columns, rows and sums equal the warehouse's.
    hist = parquet(env.targets.bucket, HISTORICO.key("curated/", "fazenda_um", D1))
    assert hist.schema.equals(HISTORICO.schema)
    assert hist.num_rows == 4
    assert sorted(set(hist.column("correlation_id").to_pylist())) == ["trace-1"]
    diario = parquet(env.targets.bucket, DIARIO.key("curated/", "fazenda_um", D1))
    assert diario.num_rows == 3
    assert sum(diario.column("consumo_total_kg").to_pylist()) == pytest.approx(
        sum(r[9] for k, r in rows.items() if k[:2] == ("fazenda_um", D1))
    )

    # Glue: both tables typed, every partition registered once.
    glue = client("glue")
    table = glue.get_table(DatabaseName=env.targets.glue_database, Name="historico_consumo")
    columns = {c["Name"]: c["Type"] for c in table["Table"]["StorageDescriptor"]["Columns"]}
    assert columns["consumo_real"] == "double" and columns["data"] == "timestamp"
    assert columns["quantidade_animais"] == "int" and columns["row_fp"] == "bigint"
    assert [k["Name"] for k in table["Table"]["PartitionKeys"]] == ["fazenda", "dia"]
    expected = [(f, d.isoformat()) for f, d in parts]
    assert partition_values(env.targets, HISTORICO) == expected
    assert partition_values(env.targets, DIARIO) == expected

    # One notice per partition, with counts and the ingest's correlation id.
    notices = [
        PartitionLoadedNotice.parse(__import__("json").dumps(n))
        for n in read_notices(env.events_queue_url, 3)
    ]
    assert sorted((n.fazenda, n.dia) for n in notices) == expected
    n_um = next(n for n in notices if (n.fazenda, n.dia) == ("fazenda_um", "2023-01-01"))
    assert (n_um.rows, n_um.lots, n_um.rejected) == (4, 3, 2)
    assert n_um.correlation_ids == ["trace-1"] and n_um.run_id == "run-1"

    # A rerun writes the same rows, files and partitions: nothing twice.
    keys = s3_keys(env.targets.bucket)
    before = summary_rows(env.warehouse_url)
    with Warehouse(env.warehouse_url) as wh:
        again = refresh_partitions(wh, env.targets, parts, notify=False)
    assert summary_rows(env.warehouse_url) == before
    assert s3_keys(env.targets.bucket) == keys
    assert partition_values(env.targets, HISTORICO) == expected
    assert [r.counts for r in again] == [r.counts for r in results]


def test_empty_and_all_rejected_partitions_give_valid_outputs(analytics_env) -> None:
    env = analytics_env
    rejected_only = [{**record(lote="1"), "peso_medio": -1}, {**record(lote="2"), "peso_medio": 0}]
    parts = load_records(env, rejected_only)
    assert parts == [("fazenda_um", D1)]
    empty = ("fazenda_dois", date(2023, 3, 1))  # nothing landed at all
    with Warehouse(env.warehouse_url) as wh:
        results = refresh_partitions(wh, env.targets, [*parts, empty])
    for result in results:
        assert result.counts.rows == 0 and result.counts.lots == 0
        assert result.passed
        body = (
            client("s3")
            .get_object(
                Bucket=env.targets.bucket, Key=env.targets.describe_key(result.fazenda, result.dia)
            )["Body"]
            .read()
        )
        header = body.decode().splitlines()[0]
        assert header == "estatistica," + ",".join(COLUMNS)
        assert "nan" not in body.decode().lower()
        frame = pd.read_csv(io.BytesIO(body), index_col=0)
        assert frame.loc["count"].tolist() == [0.0] * len(COLUMNS)
        hist = parquet(env.targets.bucket, HISTORICO.key("curated/", result.fazenda, result.dia))
        assert hist.num_rows == 0 and hist.schema.equals(HISTORICO.schema)
    assert results[0].counts.rejected == 2
    assert len(read_notices(env.events_queue_url, 2)) == 2


def test_many_partitions_in_chunks(analytics_env) -> None:
    env = analytics_env
    records = [
        consumo_record(day=f"2022-12-{d:02d}", lote=str(lot), curral=str(100 + lot))
        for d in range(1, 29)
        for lot in range(3)
    ]
    parts = load_records(env, records)
    assert len(parts) == 28
    with Warehouse(env.warehouse_url) as wh:
        results = refresh_partitions(wh, env.targets, parts, notify=False, chunk_partitions=10)
    assert [(r.fazenda, r.dia) for r in results] == parts
    assert all(r.counts.lots == 3 and r.passed for r in results)
    assert len(partition_values(env.targets, DIARIO)) == 28


def _first_run(env) -> list[tuple]:
    parts = load_records(env, [consumo_record(lote="1"), consumo_record(lote="2", curral="7")])
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(wh, env.targets, parts, notify=False)
    # More data arrives for the same partition; its refresh will fail below.
    load_records(env, [consumo_record(lote="3", curral="8")], event_id="e2")
    return parts


def test_unreachable_bucket_fails_clearly_and_leaves_the_warehouse(analytics_env, monkeypatch):
    env = analytics_env
    parts = _first_run(env)
    before = summary_rows(env.warehouse_url)
    broken = type(env.targets)(**{**env.targets.__dict__, "bucket": "no-such-bucket-here"})
    with Warehouse(env.warehouse_url) as wh, pytest.raises(AnalyticsOutputError) as err:
        refresh_partitions(wh, broken, parts)
    assert "no-such-bucket-here" in str(err.value) and "rerun" in str(err.value)
    assert summary_rows(env.warehouse_url) == before  # rolled back
    assert read_notices(env.events_queue_url, 0, timeout=1) == []
    # The next run completes it.
    with Warehouse(env.warehouse_url) as wh:
        (result,) = refresh_partitions(wh, env.targets, parts)
    assert result.counts.lots == 3 and result.passed
    assert len(summary_rows(env.warehouse_url)) == 3


def test_unreachable_glue_fails_clearly_and_leaves_the_warehouse(analytics_env, monkeypatch):
    env = analytics_env
    parts = _first_run(env)
    before = summary_rows(env.warehouse_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", f"http://127.0.0.1:{free_port()}")
    from feedlot_pipeline.analytics import catalog

    monkeypatch.setattr(catalog, "_ENSURED", set())
    with Warehouse(env.warehouse_url) as wh, pytest.raises(AnalyticsOutputError) as err:
        refresh_partitions(wh, env.targets, parts)
    assert "Glue" in str(err.value)
    assert summary_rows(env.warehouse_url) == before
    monkeypatch.delenv("AWS_ENDPOINT_URL_GLUE")
    with Warehouse(env.warehouse_url) as wh:
        (result,) = refresh_partitions(wh, env.targets, parts)
    assert result.counts.lots == 3 and result.passed


def test_a_load_committed_mid_chunk_is_not_seen_by_the_chunk(analytics_env) -> None:
    """The rows a chunk reads and the rows it builds consumo_diario from come from one snapshot
    (PostgreSQL): a load that commits between two statements of the chunk is seen by neither,
    so the reconciliation check never compares two different sets of rows."""
    from feedlot_pipeline.analytics.summary import connect

    env = analytics_env
    load_records(env, [consumo_record(lote="1")])
    with Warehouse(env.warehouse_url) as wh:
        conn = connect(wh)
        try:
            with conn.begin():
                count = sa.text("SELECT COUNT(*) FROM historico_consumo")
                before = conn.execute(count).scalar_one()
                load_records(env, [consumo_record(lote="2")], event_id="mid-chunk")  # commits
                assert conn.execute(count).scalar_one() == before
        finally:
            conn.close()
        with wh.engine.connect() as fresh:
            assert fresh.execute(count).scalar_one() == before + 1
