"""Row fingerprint on historico_consumo.

Revision ID: 0003_row_fingerprint
Revises: 0002_correlation_id
Create Date: 2026-11-23

``row_fp`` is a 64-bit fingerprint of what the row was made from (the raw line, its farm, the
consumo_meta rule and the version of the cleaning rules: ``records.row_fingerprint``). A reload
looks it up with the key and skips cleaning the lines whose row is already stored as they would
make it. Nullable and not indexed: rows loaded before this revision have none and are cleaned and
compared in full, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_row_fingerprint"
down_revision = "0002_correlation_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("historico_consumo", sa.Column("row_fp", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("historico_consumo", "row_fp")
