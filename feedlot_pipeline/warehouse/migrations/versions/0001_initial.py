"""Initial warehouse: historico_consumo, historico_consumo_rejeitados, clientes (seeded).

Revision ID: 0001_initial
Revises:
Create Date: 2023-01-01

Types are spelled out here rather than imported from ``schema.py`` so this revision stays what it
was when later revisions change the Table objects.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
SEED_CLIENTS = [
    {"cod_cliente": "FazendaUm", "fazenda": "fazenda_um"},
    {"cod_cliente": "FazendaDois", "fazenda": "fazenda_dois"},
]


def _now() -> sa.TextClause:
    # MySQL wants the default's precision to match DATETIME(6); the session time zone is UTC.
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        return sa.text("CURRENT_TIMESTAMP(6)")
    return sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "historico_consumo",
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
        sa.PrimaryKeyConstraint("id_treated_data", name="pk_historico_consumo"),
        **MYSQL,
    )
    op.create_index("ix_historico_consumo_fazenda_data", "historico_consumo", ["fazenda", "data"])

    op.create_table(
        "historico_consumo_rejeitados",
        sa.Column("raw_object_key", sa.String(512), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("fazenda", sa.String(64), nullable=False),
        sa.Column("dia", sa.Date(), nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cod_cliente", sa.String(64), nullable=True),
        sa.Column("raw_record", LONG_TEXT, nullable=False),
        sa.Column("rejected_at", UTC_TIMESTAMP, nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint(
            "raw_object_key", "line_no", name="pk_historico_consumo_rejeitados"
        ),
        **MYSQL,
    )
    op.create_index(
        "ix_historico_consumo_rejeitados_fazenda_dia",
        "historico_consumo_rejeitados",
        ["fazenda", "dia"],
    )

    clientes = op.create_table(
        "clientes",
        sa.Column("cod_cliente", sa.String(64), nullable=False),
        sa.Column("fazenda", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIMESTAMP, nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("cod_cliente", name="pk_clientes"),
        **MYSQL,
    )
    op.bulk_insert(clientes, SEED_CLIENTS)


def downgrade() -> None:
    op.drop_table("clientes")
    op.drop_index(
        "ix_historico_consumo_rejeitados_fazenda_dia", table_name="historico_consumo_rejeitados"
    )
    op.drop_table("historico_consumo_rejeitados")
    op.drop_index("ix_historico_consumo_fazenda_data", table_name="historico_consumo")
    op.drop_table("historico_consumo")
