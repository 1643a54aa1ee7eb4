"""Migrations on PostgreSQL and MySQL/MariaDB: tables, types, indexes, seed, idempotence."""

from __future__ import annotations

import sqlalchemy as sa

from feedlot_pipeline.core.records import WAREHOUSE_COLUMNS
from feedlot_pipeline.warehouse import schema
from feedlot_pipeline.warehouse.store import create_warehouse_engine


def test_tables_columns_indexes_and_seed(any_url: str) -> None:
    engine = create_warehouse_engine(any_url)
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        assert {"historico_consumo", "historico_consumo_rejeitados", "clientes"} <= tables
        assert schema.VERSION_TABLE in tables

        columns = {c["name"]: c for c in inspector.get_columns("historico_consumo")}
        assert tuple(columns) == WAREHOUSE_COLUMNS
        for name in ("id_curral", "id_raca", "id_lote"):
            assert isinstance(columns[name]["type"], sa.String), name  # never INT
            assert columns[name]["type"].length == 32
        assert columns["id_treated_data"]["type"].length == 36
        assert inspector.get_pk_constraint("historico_consumo")["constrained_columns"] == [
            "id_treated_data"
        ]
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("historico_consumo")}
        assert indexes["ix_historico_consumo_fazenda_data"] == ["fazenda", "data"]

        rejected = {c["name"]: c for c in inspector.get_columns("historico_consumo_rejeitados")}
        assert rejected["cod_cliente"]["nullable"] is True
        assert rejected["raw_object_key"]["nullable"] is False
        pk = inspector.get_pk_constraint("historico_consumo_rejeitados")["constrained_columns"]
        assert pk == ["raw_object_key", "line_no"]
        indexes = {
            i["name"]: i["column_names"]
            for i in inspector.get_indexes("historico_consumo_rejeitados")
        }
        assert indexes["ix_historico_consumo_rejeitados_fazenda_dia"] == ["fazenda", "dia"]
        if engine.dialect.name == "mysql":
            assert "MEDIUMTEXT" in str(rejected["raw_record"]["type"]).upper()

        with engine.connect() as conn:
            seeded = dict(conn.execute(sa.text("SELECT cod_cliente, fazenda FROM clientes")).all())
        assert seeded == {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}
    finally:
        engine.dispose()


def test_table_objects_match_the_migrated_database(any_url: str) -> None:
    engine = create_warehouse_engine(any_url)
    try:
        inspector = sa.inspect(engine)
        for table in schema.metadata.sorted_tables:
            found = {c["name"]: c for c in inspector.get_columns(table.name)}
            assert list(found) == [c.name for c in table.columns], table.name
            for column in table.columns:
                assert found[column.name]["nullable"] == column.nullable, column.name
            pk = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert pk == [c.name for c in table.primary_key.columns]
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_current_reports_head(any_url: str) -> None:
    assert schema.current(any_url) == schema.head()
    schema.upgrade(any_url)  # second run: nothing to do, seed not duplicated
    engine = create_warehouse_engine(any_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM clientes")).scalar() == 2
    engine.dispose()


def test_current_of_an_empty_database_is_none(empty_pg_url: str) -> None:
    assert schema.current(empty_pg_url) is None
    schema.upgrade(empty_pg_url)
    assert schema.current(empty_pg_url) == schema.head()


def test_migrations_do_not_depend_on_the_working_directory(empty_pg_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    schema.upgrade(empty_pg_url)
    assert schema.current(empty_pg_url) == schema.head()
