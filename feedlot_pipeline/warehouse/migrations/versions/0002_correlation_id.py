"""Correlation id on historico_consumo and historico_consumo_rejeitados.

Revision ID: 0002_correlation_id
Revises: 0001_initial
Create Date: 2026-11-23

The landing Lambdas stamp each raw object with the ingest's correlation id; keeping it on the row
and on the rejection lets one record be traced from the request that brought it to the table.
Nullable: rows loaded before this revision, and objects landed without one, have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_correlation_id"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

TABLES = ("historico_consumo", "historico_consumo_rejeitados")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("correlation_id", sa.String(200), nullable=True))


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_column(table, "correlation_id")
