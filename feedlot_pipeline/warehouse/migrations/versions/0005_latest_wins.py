"""Latest landing wins: landing position on rows, superseded versions kept, a ledger of loads.

Revision ID: 0005_latest_wins
Revises: 0004_consumo_diario
Create Date: 2026-12-05

- ``historico_consumo.landed_at`` / ``raw_line_no``: where in the landing order the stored
  version came from (the landed object's time, then its key, then the line). A changed record for
  the same natural key replaces the stored one only when it landed later. Nullable: rows loaded
  before this revision count as landed before anything else.
- ``historico_consumo_versoes``: every version that lost — the stored one a later landing
  replaced (``replaced``) and an incoming one older than the stored (``superseded``) — so a
  correction is auditable. Keyed by (id, object, line): reloading writes nothing twice.
- ``historico_consumo_rejeitados.record_fp``: the fingerprint of the rejected line, so the same
  bad record delivered again is recognised as the rejection already filed, not a new one.
- ``historico_consumo_cargas``: one row per raw object loaded, with what became of its lines. A
  streaming batch skips objects already here (a redelivered notice costs nothing); the blocking
  reconciliation check compares it with the tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005_latest_wins"
down_revision = "0004_consumo_diario"
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    # A bad record delivered again is the same rejection, not a new one: its fingerprint.
    op.add_column(
        "historico_consumo_rejeitados", sa.Column("record_fp", sa.BigInteger(), nullable=True)
    )
    op.create_index(
        "ix_historico_consumo_rejeitados_record_fp", "historico_consumo_rejeitados", ["record_fp"]
    )
    op.add_column("historico_consumo", sa.Column("landed_at", UTC_TIMESTAMP, nullable=True))
    op.add_column("historico_consumo", sa.Column("raw_line_no", sa.Integer(), nullable=True))
    op.create_table(
        "historico_consumo_versoes",
        sa.Column("id_treated_data", sa.String(36), nullable=False),
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
        sa.Column("correlation_id", sa.String(200), nullable=True),
        sa.Column("row_fp", sa.BigInteger(), nullable=True),
        sa.Column("landed_at", UTC_TIMESTAMP, nullable=True),
        sa.Column("raw_line_no", sa.Integer(), nullable=False),
        sa.Column("version_status", sa.String(16), nullable=False),
        sa.Column("archived_at", UTC_TIMESTAMP, nullable=False),
        sa.Column("winner_object_key", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint(
            "id_treated_data", "raw_object_key", "raw_line_no", name="pk_historico_consumo_versoes"
        ),
        **MYSQL,
    )
    op.create_index(
        "ix_historico_consumo_versoes_fazenda_data",
        "historico_consumo_versoes",
        ["fazenda", "data"],
    )
    op.create_table(
        "historico_consumo_cargas",
        sa.Column("raw_object_key", sa.String(512), nullable=False),
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
        sa.PrimaryKeyConstraint("raw_object_key", name="pk_historico_consumo_cargas"),
        **MYSQL,
    )
    op.create_index(
        "ix_historico_consumo_cargas_fazenda_dia", "historico_consumo_cargas", ["fazenda", "dia"]
    )
    op.create_index("ix_historico_consumo_cargas_run_id", "historico_consumo_cargas", ["run_id"])


def downgrade() -> None:
    op.drop_table("historico_consumo_cargas")
    op.drop_table("historico_consumo_versoes")
    op.drop_column("historico_consumo", "raw_line_no")
    op.drop_column("historico_consumo", "landed_at")
    op.drop_index(
        "ix_historico_consumo_rejeitados_record_fp", table_name="historico_consumo_rejeitados"
    )
    op.drop_column("historico_consumo_rejeitados", "record_fp")
