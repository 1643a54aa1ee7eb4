"""PostgreSQL side of the warehouse: binary COPY, the latest-landing-wins merge, reload probes,
rejections.

Every chunk of rows goes through a session-local staging table (binary COPY, no casts), except a
first load whose ids are all new: that is COPYed straight into historico_consumo (the primary key
proves it, or the COPY fails and is rolled back to a savepoint). The merge, in one transaction:

1. classify each staged row against the stored one, per raw object: new, a later landing of
   changed data (replaces the stored version), an earlier landing of changed data (superseded:
   the stored version stays), or identical (unchanged);
2. archive the versions that lose into historico_consumo_versoes (keyed by id, object, line, so a
   reload archives nothing twice);
3. UPDATE the replaced rows, INSERT the new ones.

The planner has no statistics on a staging table just filled; ``SET LOCAL`` keeps it on one
primary-key probe per staged row instead of scanning historico_consumo.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

from feedlot_pipeline.core.records import WAREHOUSE_COLUMNS
from feedlot_pipeline.warehouse.batches import (
    DATA_COLUMNS,
    REPLACED,
    SUPERSEDED,
    VERSION_COLUMNS,
    CopyRows,
    LoadCounts,
)
from feedlot_pipeline.warehouse.schema import historico_consumo_rejeitados

# PostgreSQL types of WAREHOUSE_COLUMNS, for binary COPY (which applies no casts).
COPY_TYPES = [
    *["text"] * 4,  # id_treated_data, id_curral, id_raca, id_lote
    *["float8"] * 2,  # peso_entrada, peso_medio
    *["int4"] * 2,  # quantidade_animais, dia_confinamento
    *["float8"] * 2,  # consumo_real, consumo_meta
    "timestamptz",  # data
    *["text"] * 4,  # cod_cliente, fazenda, regra_consumo_meta, raw_object_key
    "timestamptz",  # row_ts
    "text",  # correlation_id
    "int8",  # row_fp
    "timestamptz",  # landed_at
    "int4",  # raw_line_no
]
assert len(COPY_TYPES) == len(WAREHOUSE_COLUMNS)
COPY_BLOCK = 1 << 20
STAGE = "feedlot_stage_consumo"
KEYS = "feedlot_stage_keys"
IDS = "feedlot_stage_ids"

_COLS = ", ".join(WAREHOUSE_COLUMNS)
_DIFFER = (
    f"({', '.join(f'h.{c}' for c in DATA_COLUMNS)}) "
    f"IS DISTINCT FROM ({', '.join(f's.{c}' for c in DATA_COLUMNS)})"
)
_POS = (
    "(COALESCE({t}.landed_at, '-infinity'::timestamptz), {t}.raw_object_key,"
    " COALESCE({t}.raw_line_no, 0))"
)
# A version wins when it landed later, or is the same line read again (its object changed).
_NEWER = f"{_POS.format(t='s')} >= {_POS.format(t='h')}"

STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} "
    "(LIKE historico_consumo INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
STAGE_COPY = f"COPY {STAGE} ({_COLS}) FROM STDIN (FORMAT BINARY)"
DIRECT_COPY = f"COPY historico_consumo ({_COLS}) FROM STDIN (FORMAT BINARY)"
CLASSIFY = f"""
SELECT s.raw_object_key,
       count(*) AS staged,
       count(*) FILTER (WHERE h.id_treated_data IS NULL) AS new,
       count(*) FILTER (WHERE h.id_treated_data IS NOT NULL AND {_DIFFER} AND {_NEWER}) AS replaced,
       count(*) FILTER (WHERE h.id_treated_data IS NOT NULL AND {_DIFFER} AND NOT {_NEWER})
           AS superseded
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
SELECT {cols}, '{status}', now(), {winner}.raw_object_key
FROM {STAGE} AS s JOIN historico_consumo AS h ON h.id_treated_data = s.id_treated_data
WHERE {_DIFFER} AND {condition}
ON CONFLICT DO NOTHING
"""


ARCHIVE_REPLACED = _archive("h", REPLACED, "s", _NEWER)
ARCHIVE_SUPERSEDED = _archive("s", SUPERSEDED, "h", f"NOT {_NEWER}")
UPDATE_REPLACED = f"""
UPDATE historico_consumo AS h
SET ({", ".join(WAREHOUSE_COLUMNS[1:])}) = ({", ".join(f"s.{c}" for c in WAREHOUSE_COLUMNS[1:])})
FROM {STAGE} AS s
WHERE h.id_treated_data = s.id_treated_data AND {_DIFFER} AND {_NEWER}
"""
INSERT_NEW = f"""
INSERT INTO historico_consumo ({_COLS})
SELECT {", ".join(f"s.{c}" for c in WAREHOUSE_COLUMNS)} FROM {STAGE} AS s
WHERE NOT EXISTS (
    SELECT 1 FROM historico_consumo AS h WHERE h.id_treated_data = s.id_treated_data
)
ON CONFLICT (id_treated_data) DO NOTHING
"""
# Lines already stored exactly as they would be made (reload regime): by id, fingerprint, farm
# and rule. LATERAL fixes the plan's shape: the keys outside, one primary-key probe each (a plain
# join let the planner scan a freshly loaded table per key: 220 s instead of 0.1 s).
KEYS_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {KEYS} "
    "(id_treated_data varchar(36) NOT NULL, row_fp bigint NOT NULL, fazenda varchar(64) NOT NULL)"
    " ON COMMIT DELETE ROWS"
)
KEYS_COPY = f"COPY {KEYS} (id_treated_data, row_fp, fazenda) FROM STDIN (FORMAT BINARY)"
KEYS_MATCH = f"""
SELECT k.id_treated_data FROM {KEYS} AS k
CROSS JOIN LATERAL (
    SELECT 1 FROM historico_consumo AS h
    WHERE h.id_treated_data = k.id_treated_data AND h.row_fp = k.row_fp
      AND h.fazenda = k.fazenda AND h.regra_consumo_meta = %s
    LIMIT 1
) AS stored
"""
IDS_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {IDS} (id_treated_data varchar(36) NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
IDS_COPY = f"COPY {IDS} (id_treated_data) FROM STDIN (FORMAT BINARY)"


class Encoder:
    """Formats rows as binary COPY data without a server round trip (psycopg's adapters)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._conn: Any = None
        self._lock = threading.Lock()

    def encode(self, rows: Sequence[tuple], types: list[str]) -> CopyRows:
        from psycopg.copy import Copy, FileWriter

        buffer = io.BytesIO()
        with self._lock:
            if self._conn is None:
                self._conn = self.engine.raw_connection()
            # A cursor that never executes: it only lends its adapters to the formatter.
            cursor = self._conn.driver_connection.cursor()
            try:
                with Copy(cursor, binary=True, writer=FileWriter(buffer)) as copy:
                    copy.set_types(types)
                    write_row = copy.write_row
                    for row in rows:
                        write_row(row)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    "rows must follow WAREHOUSE_COLUMNS, with timezone-aware datetimes in data, "
                    f"row_ts and landed_at (as records.clean makes them): {err}"
                ) from err
            finally:
                cursor.close()
        return CopyRows(buffer.getvalue(), len(rows))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def copy_in(cur: Any, sql: str, rows: CopyRows) -> None:
    with cur.copy(sql) as copy:
        view = memoryview(rows.data)
        for start in range(0, len(view), COPY_BLOCK):
            copy.write(view[start : start + COPY_BLOCK])


def upsert(
    engine: Any, rows: CopyRows, assume_new: bool, per_object_new: dict[str, int]
) -> dict[str, LoadCounts]:
    """Load one chunk; what happened to its rows, per raw object.

    ``per_object_new`` (rows per object in this chunk) is the answer when a direct COPY of an
    all-new chunk succeeds.
    """
    from psycopg.errors import UniqueViolation

    with engine.begin() as conn:
        pg = conn.connection.driver_connection
        with pg.cursor() as cur:
            cur.execute(STAGE_DDL)  # also opens the transaction the savepoint needs
            if assume_new:
                cur.execute("SAVEPOINT feedlot_direct_copy")
                try:
                    copy_in(cur, DIRECT_COPY, rows)
                except UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT feedlot_direct_copy")
                else:
                    cur.execute("RELEASE SAVEPOINT feedlot_direct_copy")
                    return {k: LoadCounts(inserted=n) for k, n in per_object_new.items()}
            copy_in(cur, STAGE_COPY, rows)
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute(CLASSIFY)
            out: dict[str, LoadCounts] = {}
            any_existing = False
            for key, staged, new, replaced, superseded in cur.fetchall():
                unchanged = staged - new - replaced - superseded
                out[key] = LoadCounts(new, replaced, unchanged, superseded)
                any_existing = any_existing or staged != new
            if any_existing:
                cur.execute(ARCHIVE_REPLACED)
                cur.execute(ARCHIVE_SUPERSEDED)
                cur.execute(UPDATE_REPLACED)
            cur.execute(INSERT_NEW)
    return out


def stored_as_is(engine: Any, keys: CopyRows, rule_name: str) -> set[str]:
    """The ids among ``keys`` stored with that very ``row_fp``, farm and rule."""
    if not keys.count:
        return set()
    with engine.begin() as conn:
        pg = conn.connection.driver_connection
        with pg.cursor() as cur:
            cur.execute(KEYS_DDL)
            copy_in(cur, KEYS_COPY, keys)
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute(KEYS_MATCH, (rule_name,))
            return {row[0] for row in cur.fetchall()}


def stored_rows(engine: Any, ids: CopyRows, select_sql: str) -> list[tuple]:
    """``select_sql`` (which joins IDS to historico_consumo) over the given ids."""
    if not ids.count:
        return []
    with engine.begin() as conn:
        pg = conn.connection.driver_connection
        with pg.cursor() as cur:
            cur.execute(IDS_DDL)
            copy_in(cur, IDS_COPY, ids)
            cur.execute("SET LOCAL enable_hashjoin = off")
            cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute(select_sql)
            return list(cur.fetchall())


# --- rejections ---------------------------------------------------------------------------------

REJECT_COLUMNS = tuple(c.name for c in historico_consumo_rejeitados.columns)
REJECT_TYPES = [
    "text",
    "int4",
    "text",
    "date",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "int8",
]
REJECT_STAGE = "feedlot_stage_rejeitados"
REJECT_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {REJECT_STAGE} "
    "(LIKE historico_consumo_rejeitados INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
REJECT_COPY = f"COPY {REJECT_STAGE} ({', '.join(REJECT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
REJECT_MERGE = f"""
INSERT INTO historico_consumo_rejeitados ({", ".join(REJECT_COLUMNS)})
SELECT {", ".join(REJECT_COLUMNS)} FROM {REJECT_STAGE}
ON CONFLICT (raw_object_key, line_no) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in REJECT_COLUMNS[2:])}
"""


def upsert_rejections(conn: Any, values: list[dict[str, Any]]) -> None:
    """Write rejection rows in the caller's transaction; a stored (object, line) is replaced.

    COPY into a staging table, then one INSERT … ON CONFLICT: ~20x faster than an executemany
    when a bulk load rejects tens of thousands of lines.
    """
    pg = conn.connection.driver_connection
    with pg.cursor() as cur:
        cur.execute(REJECT_STAGE_DDL)
        with cur.copy(REJECT_COPY) as copy:
            copy.set_types(REJECT_TYPES)
            for v in values:
                copy.write_row([v[c] for c in REJECT_COLUMNS])
        cur.execute(REJECT_MERGE)
