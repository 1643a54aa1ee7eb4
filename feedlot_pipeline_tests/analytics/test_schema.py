"""Migration 0004: consumo_diario on PostgreSQL and MySQL/MariaDB, as schema.py mirrors it."""

from __future__ import annotations

import sqlalchemy as sa

from feedlot_pipeline.warehouse import schema
from feedlot_pipeline.warehouse.store import create_warehouse_engine


def test_consumo_diario_table_key_and_indexes(any_url: str) -> None:
    engine = create_warehouse_engine(any_url)
    try:
        inspector = sa.inspect(engine)
        columns = {c["name"]: c for c in inspector.get_columns("consumo_diario")}
        assert list(columns) == [c.name for c in schema.consumo_diario.columns]
        for name in ("id_lote", "id_curral"):
            assert isinstance(columns[name]["type"], sa.String), name  # never INT
        assert columns["desvio_pct"]["nullable"] is True  # meta 0 gives NULL, not a crash
        pk = inspector.get_pk_constraint("consumo_diario")["constrained_columns"]
        assert pk == ["fazenda", "dia", "id_lote", "id_curral"]
        # The primary key serves every query; no secondary index to maintain on a rebuild.
        assert inspector.get_indexes("consumo_diario") == []
    finally:
        engine.dispose()
    assert schema.head() == "0005_latest_wins"


def test_downgrade_to_0003_drops_only_consumo_diario(any_url: str) -> None:
    from alembic import command

    engine = create_warehouse_engine(any_url)
    try:
        with engine.connect() as conn:
            config = schema.alembic_config(any_url)
            config.attributes["connection"] = conn
            command.downgrade(config, "0003_row_fingerprint")
            conn.commit()
        tables = set(sa.inspect(engine).get_table_names())
        assert "consumo_diario" not in tables and "historico_consumo" in tables
    finally:
        engine.dispose()
    schema.upgrade(any_url)
    assert schema.current(any_url) == schema.head()
