"""Warehouse schema: the tables as SQLAlchemy Core objects, and Alembic migrations run from code.

The migrations (``migrations/versions``) are the source of truth for the database; the ``Table``
objects here mirror them for building queries, and a test checks that the two agree. Both
PostgreSQL and MySQL/MariaDB are supported:

- timestamps are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL and ``DATETIME(6)`` holding naive UTC
  on MySQL (MySQL's ``TIMESTAMP`` shifts values by the session time zone and ends in 2038);
- MySQL tables use ``utf8mb4_bin`` so keys compare exactly as in Python and PostgreSQL (the
  server default collation is case-insensitive: 'fazendaum' would collide with 'FazendaUm').

Migrations are run programmatically (``upgrade(url)``) with the script location taken from this
package, so they work from any working directory and from an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import mysql

from feedlot_pipeline.core.records import WAREHOUSE_COLUMNS
from feedlot_pipeline.warehouse.engine import create_warehouse_engine

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# Not "alembic_version": the warehouse may share a database with Dagster's storage, which has one.
VERSION_TABLE = "warehouse_alembic_version"
_LOCK_NAME = "feedlot_warehouse_migrations"
_LOCK_KEY = 0x6665_6564_6C6F_74  # pg_advisory_xact_lock key ("feedlot")

UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

# The ingest's trace id (the landed object's correlation-id metadata); longer ones are cut.
CORRELATION_ID_CHARS = 200

metadata = sa.MetaData()

historico_consumo = sa.Table(
    "historico_consumo",
    metadata,
    sa.Column("id_treated_data", sa.String(36), primary_key=True),
    sa.Column("id_curral", sa.String(32), nullable=False),
    sa.Column("id_raca", sa.String(32), nullable=False),
    sa.Column("id_lote", sa.String(32), nullable=False),
    sa.Column("peso_entrada", sa.Double(), nullable=False),
    sa.Column("peso_medio", sa.Double(), nullable=False),
    sa.Column("quantidade_animais", sa.Integer(), nullable=False),
    sa.Column("dia_confinamento", sa.Integer(), nullable=False),
    sa.Column("consumo_real", sa.Double(), nullable=False),
    sa.Column("consumo_meta", sa.Double(), nullable=False),
    sa.Column("data", UTC_TIMESTAMP, nullable=False),
    sa.Column("cod_cliente", sa.String(64), nullable=False),
    sa.Column("fazenda", sa.String(64), nullable=False),
    sa.Column("regra_consumo_meta", sa.String(64), nullable=False),
    sa.Column("raw_object_key", sa.String(512), nullable=False),
    sa.Column("row_ts", UTC_TIMESTAMP, nullable=False),
    sa.Column("correlation_id", sa.String(CORRELATION_ID_CHARS), nullable=True),
    sa.Column("row_fp", sa.BigInteger(), nullable=True),  # records.row_fingerprint
    sa.Column("landed_at", UTC_TIMESTAMP, nullable=True),  # landing order: latest wins
    sa.Column("raw_line_no", sa.Integer(), nullable=True),
    sa.Index("ix_historico_consumo_fazenda_data", "fazenda", "data"),
    **_MYSQL,
)

# Versions that lost to a later landing (``replaced``) or arrived older than the stored one
# (``superseded``): auditable, never among the rejections.
historico_consumo_versoes = sa.Table(
    "historico_consumo_versoes",
    metadata,
    sa.Column("id_treated_data", sa.String(36), primary_key=True),
    sa.Column("id_curral", sa.String(32), nullable=False),
    sa.Column("id_raca", sa.String(32), nullable=False),
    sa.Column("id_lote", sa.String(32), nullable=False),
    sa.Column("peso_entrada", sa.Double(), nullable=False),
    sa.Column("peso_medio", sa.Double(), nullable=False),
    sa.Column("quantidade_animais", sa.Integer(), nullable=False),
    sa.Column("dia_confinamento", sa.Integer(), nullable=False),
    sa.Column("consumo_real", sa.Double(), nullable=False),
    sa.Column("consumo_meta", sa.Double(), nullable=False),
    sa.Column("data", UTC_TIMESTAMP, nullable=False),
    sa.Column("cod_cliente", sa.String(64), nullable=False),
    sa.Column("fazenda", sa.String(64), nullable=False),
    sa.Column("regra_consumo_meta", sa.String(64), nullable=False),
    sa.Column("raw_object_key", sa.String(512), primary_key=True),
    sa.Column("row_ts", UTC_TIMESTAMP, nullable=False),
    sa.Column("correlation_id", sa.String(CORRELATION_ID_CHARS), nullable=True),
    sa.Column("row_fp", sa.BigInteger(), nullable=True),
    sa.Column("landed_at", UTC_TIMESTAMP, nullable=True),
    sa.Column("raw_line_no", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("version_status", sa.String(16), nullable=False),  # replaced | superseded
    sa.Column("archived_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("winner_object_key", sa.String(512), nullable=False),
    sa.Index("ix_historico_consumo_versoes_fazenda_data", "fazenda", "data"),
    **_MYSQL,
)

# One row per raw object loaded: what became of its lines (the load ledger).
historico_consumo_cargas = sa.Table(
    "historico_consumo_cargas",
    metadata,
    sa.Column("raw_object_key", sa.String(512), primary_key=True),
    sa.Column("fazenda", sa.String(64), nullable=False),
    sa.Column("dia", sa.Date(), nullable=False),
    sa.Column("landed_at", UTC_TIMESTAMP, nullable=True),
    sa.Column("lines", sa.Integer(), nullable=False),
    sa.Column("inserted", sa.Integer(), nullable=False),
    sa.Column("updated", sa.Integer(), nullable=False),
    sa.Column("unchanged", sa.Integer(), nullable=False),
    sa.Column("superseded", sa.Integer(), nullable=False),
    sa.Column("rejected", sa.Integer(), nullable=False),
    sa.Column("loaded_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Index("ix_historico_consumo_cargas_fazenda_dia", "fazenda", "dia"),
    sa.Index("ix_historico_consumo_cargas_run_id", "run_id"),
    **_MYSQL,
)

historico_consumo_rejeitados = sa.Table(
    "historico_consumo_rejeitados",
    metadata,
    sa.Column("raw_object_key", sa.String(512), primary_key=True),
    sa.Column("line_no", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("fazenda", sa.String(64), nullable=False),
    sa.Column("dia", sa.Date(), nullable=False),
    sa.Column("reason_code", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("cod_cliente", sa.String(64), nullable=True),
    sa.Column("raw_record", LONG_TEXT, nullable=False),
    sa.Column("rejected_at", UTC_TIMESTAMP, nullable=False),
    sa.Column("correlation_id", sa.String(CORRELATION_ID_CHARS), nullable=True),
    sa.Column("record_fp", sa.BigInteger(), nullable=True),  # records.row_fingerprint
    sa.Index("ix_historico_consumo_rejeitados_fazenda_dia", "fazenda", "dia"),
    sa.Index("ix_historico_consumo_rejeitados_record_fp", "record_fp"),
    **_MYSQL,
)

clientes = sa.Table(
    "clientes",
    metadata,
    sa.Column("cod_cliente", sa.String(64), primary_key=True),
    sa.Column("fazenda", sa.String(64), nullable=False),
    sa.Column("created_at", UTC_TIMESTAMP, nullable=False),
    **_MYSQL,
)


# The daily summary (analytics layer, migration 0004): one row per farm × day × lot × pen, rebuilt
# per partition from historico_consumo. Per-head values are weighted by quantidade_animais when a
# lot × pen reported more than once on a day; desvio_pct = (real - meta) / meta × 100.
consumo_diario = sa.Table(
    "consumo_diario",
    metadata,
    sa.Column("fazenda", sa.String(64), primary_key=True),
    sa.Column("dia", sa.Date(), primary_key=True),
    sa.Column("id_lote", sa.String(32), primary_key=True),
    sa.Column("id_curral", sa.String(32), primary_key=True),
    sa.Column("registros", sa.Integer(), nullable=False),
    sa.Column("quantidade_animais", sa.Integer(), nullable=False),
    sa.Column("consumo_real_cabeca", sa.Double(), nullable=False),
    sa.Column("consumo_meta_cabeca", sa.Double(), nullable=False),
    sa.Column("desvio_pct", sa.Double(), nullable=True),
    sa.Column("consumo_total_kg", sa.Double(), nullable=False),
    sa.Column("peso_medio", sa.Double(), nullable=False),
    sa.Column("dia_confinamento", sa.Integer(), nullable=False),
    sa.Column("regra_consumo_meta", sa.String(64), nullable=False),
    sa.Column("ultimo_processamento", UTC_TIMESTAMP, nullable=False),
    **_MYSQL,
)

assert tuple(c.name for c in historico_consumo.columns) == WAREHOUSE_COLUMNS


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing at this package's migrations; no alembic.ini is read."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = url  # not a main option: '%' in passwords breaks ini parsing
    return config


def head() -> str:
    """The newest revision in this package."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return revision


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the warehouse at ``url`` to ``revision`` (default: the newest).

    Concurrent callers (several processes starting at once) are serialised by a database lock,
    so each migration runs exactly once.
    """
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as conn:
            _lock(conn)
            try:
                config = alembic_config(url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                _unlock(conn)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the warehouse at ``url`` is at; None when it was never migrated."""
    engine = create_warehouse_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        engine.dispose()


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Released at commit/rollback of the migration transaction.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    else:
        got = conn.execute(sa.text("SELECT GET_LOCK(:n, 300)"), {"n": _LOCK_NAME}).scalar()
        if got != 1:
            raise RuntimeError("another process holds the migration lock for over 300 s")


def _unlock(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": _LOCK_NAME})
