"""What moves between the loader, the store and a dialect: encoded rows, counts, ledger entries.

Also the column groups every dialect's SQL is written from, so the dialects agree on what a
"change" of a record is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from feedlot_pipeline.core.records import WAREHOUSE_COLUMNS

# Where and when a version came from. A redelivery of the same data changes none of them.
LINEAGE_COLUMNS = (
    "raw_object_key",
    "row_ts",
    "correlation_id",
    "row_fp",
    "landed_at",
    "raw_line_no",
)
# Columns whose change makes a reloaded record a new version of its row.
DATA_COLUMNS = tuple(c for c in WAREHOUSE_COLUMNS[1:] if c not in LINEAGE_COLUMNS)
# Columns a loaded row always has (lineage that older loads did not record is optional).
REQUIRED_COLUMNS = tuple(
    c
    for c in WAREHOUSE_COLUMNS
    if c not in ("correlation_id", "row_fp", "landed_at", "raw_line_no")
)
# historico_consumo_versoes = the row's columns, then why and when it lost and to what.
VERSION_COLUMNS = (*WAREHOUSE_COLUMNS, "version_status", "archived_at", "winner_object_key")
REPLACED, SUPERSEDED = "replaced", "superseded"


@dataclass(frozen=True)
class LoadCounts:
    """What an upsert did with its rows.

    ``inserted`` new ids; ``updated`` stored versions replaced by a later landing (the old one is
    archived); ``unchanged`` identical to what is stored (a redelivery); ``superseded`` changed
    versions that landed before the stored one (archived, the stored one stays).
    """

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0

    def __add__(self, other: LoadCounts) -> LoadCounts:
        return LoadCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.superseded + other.superseded,
        )

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.superseded


@dataclass(frozen=True)
class CopyRows:
    """Rows already encoded as PostgreSQL binary COPY data (``Warehouse.encode_rows``).

    Encoding is CPU work in Python; doing it where the rows are made lets the thread that talks
    to the database spend its time waiting on the server, without the GIL.
    """

    data: bytes
    count: int


@dataclass
class LedgerEntry:
    """One raw object loaded, and what became of its lines (``historico_consumo_cargas``)."""

    raw_object_key: str
    fazenda: str
    dia: date
    landed_at: datetime | None
    lines: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    superseded: int = 0
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.superseded
