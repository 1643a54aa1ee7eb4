"""MySQL/MariaDB side of the warehouse: the latest-landing-wins merge of PostgreSQL, rejections.

A chunk is written to a session-local TEMPORARY staging table (batched multi-row INSERT), then,
in one transaction: classify each staged row against the stored one per raw object, archive the
losing versions into historico_consumo_versoes, UPDATE the replaced rows (a multi-table UPDATE
whose SET reads only the staged values, so MySQL's left-to-right assignment order cannot matter),
INSERT the new ones. Timestamps are DATETIME(6) holding naive UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone
from typing import Any

from feedlot_pipeline.core.records import COL, WAREHOUSE_COLUMNS
from feedlot_pipeline.warehouse.batches import (
    DATA_COLUMNS,
    REPLACED,
    SUPERSEDED,
    VERSION_COLUMNS,
    LoadCounts,
)
from feedlot_pipeline.warehouse.schema import historico_consumo_rejeitados

BATCH = 2_000
STAGE = "feedlot_stage_consumo"
IDS = "feedlot_stage_ids"
_COLS = ", ".join(WAREHOUSE_COLUMNS)
_DIFFER = "NOT (" + " AND ".join(f"h.{c} <=> s.{c}" for c in DATA_COLUMNS) + ")"
_POS = "(COALESCE({t}.landed_at, '1000-01-01'), {t}.raw_object_key, COALESCE({t}.raw_line_no, 0))"
# A version wins when it landed later, or is the same line read again (its object changed).
_NEWER = f"{_POS.format(t='s')} >= {_POS.format(t='h')}"
_TIMESTAMPS = tuple(COL[c] for c in ("data", "row_ts", "landed_at"))

STAGE_DDL = f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} LIKE historico_consumo"
STAGE_CLEAR = f"DELETE FROM {STAGE}"
STAGE_INSERT = (
    f"INSERT INTO {STAGE} ({_COLS}) VALUES ({', '.join(['%s'] * len(WAREHOUSE_COLUMNS))})"
)
CLASSIFY = f"""
SELECT s.raw_object_key, COUNT(*),
       SUM(h.id_treated_data IS NULL),
       SUM(h.id_treated_data IS NOT NULL AND {_DIFFER} AND {_NEWER}),
       SUM(h.id_treated_data IS NOT NULL AND {_DIFFER} AND NOT {_NEWER})
FROM {STAGE} AS s
LEFT JOIN historico_consumo AS h ON h.id_treated_data = s.id_treated_data
GROUP BY s.raw_object_key
"""


def _archive(source: str, status: str, winner: str, condition: str) -> str:
    cols = ", ".join(
        f"COALESCE({source}.raw_line_no, 0)" if c == "raw_line_no" else f"{source}.{c}"
        for c in WAREHOUSE_COLUMNS
    )
    return f"""
INSERT INTO historico_consumo_versoes ({", ".join(VERSION_COLUMNS)})
SELECT {cols}, '{status}', UTC_TIMESTAMP(6), {winner}.raw_object_key
FROM {STAGE} AS s JOIN historico_consumo AS h ON h.id_treated_data = s.id_treated_data
WHERE {_DIFFER} AND {condition}
ON DUPLICATE KEY UPDATE version_status = version_status
"""


ARCHIVE_REPLACED = _archive("h", REPLACED, "s", _NEWER)
ARCHIVE_SUPERSEDED = _archive("s", SUPERSEDED, "h", f"NOT {_NEWER}")
UPDATE_REPLACED = f"""
UPDATE historico_consumo AS h JOIN {STAGE} AS s ON h.id_treated_data = s.id_treated_data
SET {", ".join(f"h.{c} = s.{c}" for c in WAREHOUSE_COLUMNS[1:])}
WHERE {_DIFFER} AND {_NEWER}
"""
INSERT_NEW = f"""
INSERT INTO historico_consumo ({_COLS})
SELECT {", ".join(f"s.{c}" for c in WAREHOUSE_COLUMNS)} FROM {STAGE} AS s
LEFT JOIN historico_consumo AS h ON h.id_treated_data = s.id_treated_data
WHERE h.id_treated_data IS NULL
ON DUPLICATE KEY UPDATE id_treated_data = historico_consumo.id_treated_data
"""
IDS_DDL = f"CREATE TEMPORARY TABLE IF NOT EXISTS {IDS} (id_treated_data VARCHAR(36) NOT NULL)"


def naive_utc(row: tuple) -> tuple:
    """A row for PyMySQL: timestamps as naive UTC (DATETIME(6) holds UTC)."""
    out = list(row)
    for i in _TIMESTAMPS:
        value = out[i]
        if value is not None and value.tzinfo is not None:
            out[i] = value.astimezone(timezone.utc).replace(tzinfo=None)
    return tuple(out)


def upsert(engine: Any, rows: Sequence[tuple]) -> dict[str, LoadCounts]:
    """Load one chunk of distinct ids; what happened to its rows, per raw object."""
    with engine.begin() as conn:
        my = conn.connection.driver_connection
        with my.cursor() as cur:
            cur.execute(STAGE_DDL)
            cur.execute(STAGE_CLEAR)
            for start in range(0, len(rows), BATCH):
                cur.executemany(STAGE_INSERT, [naive_utc(r) for r in rows[start : start + BATCH]])
            cur.execute(CLASSIFY)
            out: dict[str, LoadCounts] = {}
            any_existing = False
            for key, staged, new, replaced, superseded in cur.fetchall():
                staged, new = int(staged), int(new or 0)
                replaced, superseded = int(replaced or 0), int(superseded or 0)
                out[key] = LoadCounts(
                    new, replaced, staged - new - replaced - superseded, superseded
                )
                any_existing = any_existing or staged != new
            if any_existing:
                cur.execute(ARCHIVE_REPLACED)
                cur.execute(ARCHIVE_SUPERSEDED)
                cur.execute(UPDATE_REPLACED)
            cur.execute(INSERT_NEW)
            cur.execute(STAGE_CLEAR)
    return out


def stored_rows(engine: Any, ids: Sequence[str], select_sql: str) -> list[tuple]:
    """``select_sql`` (which joins IDS to historico_consumo) over the given ids."""
    if not ids:
        return []
    with engine.begin() as conn:
        my = conn.connection.driver_connection
        with my.cursor() as cur:
            cur.execute(IDS_DDL)
            cur.execute(f"DELETE FROM {IDS}")
            for start in range(0, len(ids), BATCH):
                cur.executemany(
                    f"INSERT INTO {IDS} (id_treated_data) VALUES (%s)",
                    [(i,) for i in ids[start : start + BATCH]],
                )
            cur.execute(select_sql)
            found = list(cur.fetchall())
            cur.execute(f"DELETE FROM {IDS}")
            return found


def upsert_rejections(conn: Any, values: list[dict[str, Any]]) -> None:
    """Write rejection rows in the caller's transaction; a stored (object, line) is replaced."""
    from sqlalchemy.dialects.mysql import insert

    table = historico_consumo_rejeitados
    stmt = insert(table)
    update = [c.name for c in table.columns][2:]  # all but the key (raw_object_key, line_no)
    stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
    for start in range(0, len(values), 5_000):
        conn.execute(stmt, values[start : start + 5_000])
