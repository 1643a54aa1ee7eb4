"""consumo_diario: the daily summary per farm × day × lot × pen.

Revision ID: 0004_consumo_diario
Revises: 0003_row_fingerprint
Create Date: 2026-12-05

Rebuilt per farm × day partition by the analytics layer from historico_consumo (one transaction
per partition: the same rows on every rerun). The primary key (fazenda, dia, id_lote, id_curral)
serves every query of the analytics (partition delete and reads, per-farm reconciliation and
freshness, the report's trend); no other index, so a rebuild pays for one index only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004_consumo_diario"
down_revision = "0003_row_fingerprint"
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "consumo_diario",
        sa.Column("fazenda", sa.String(64), nullable=False),
        sa.Column("dia", sa.Date(), nullable=False),
        sa.Column("id_lote", sa.String(32), nullable=False),
        sa.Column("id_curral", sa.String(32), nullable=False),
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
        sa.PrimaryKeyConstraint("fazenda", "dia", "id_lote", "id_curral", name="pk_consumo_diario"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("consumo_diario")
