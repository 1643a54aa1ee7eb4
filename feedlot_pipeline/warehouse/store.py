"""The warehouse: reference data, idempotent loads and partition statistics (SQLAlchemy 2.0 Core).

One class, ``Warehouse``, for PostgreSQL (``postgresql+psycopg://``, psycopg 3) and MySQL/MariaDB
(``mysql+pymysql://``). Every statement is parameterised; table and column names come only from
``schema.py``.

Loads are idempotent by construction: ``id_treated_data`` is the key, an unchanged record writes
nothing (``row_ts`` keeps the first processing time) and a changed one is updated in place.
PostgreSQL loads stream each chunk with binary COPY, either straight into historico_consumo when
every id is new (a first load: the primary key proves it, or the COPY fails and is rolled back to
a savepoint) or into a session-local staging table merged with one ``INSERT … ON CONFLICT``.
MySQL uses batched multi-row ``INSERT … ON DUPLICATE KEY UPDATE``.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from feedlot_pipeline.core.lake import check_farm, parse_raw_key
from feedlot_pipeline.core.records import RULES, UNROUTED_FARM, WAREHOUSE_COLUMNS
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.warehouse.schema import (
    clientes,
    historico_consumo,
    historico_consumo_rejeitados,
)

UTC = timezone.utc
# Columns whose change makes a reloaded record an update. The rest is lineage (where and when
# the row came from): a redelivery of the same data in another object changes none of it.
LINEAGE_COLUMNS = ("raw_object_key", "row_ts", "correlation_id", "row_fp")
DATA_COLUMNS = tuple(c for c in WAREHOUSE_COLUMNS[1:] if c not in LINEAGE_COLUMNS)
# Columns a loaded row always has (correlation_id is optional: not every ingest carries one;
# row_fp only speeds reloads up).
REQUIRED_COLUMNS = tuple(c for c in WAREHOUSE_COLUMNS if c not in ("correlation_id", "row_fp"))
# Limits of historico_consumo_rejeitados, applied before writing so a hostile line cannot fail
# the load: raw_record is MEDIUMTEXT (16 MiB) on MySQL.
MAX_RAW_RECORD_CHARS = 1_000_000
MAX_REASON_CHARS = 2_000
# PostgreSQL types of WAREHOUSE_COLUMNS, for binary COPY (which applies no casts).
_PG_COPY_TYPES = [
    *["text"] * 4,  # id_treated_data, id_curral, id_raca, id_lote
    *["float8"] * 2,  # peso_entrada, peso_medio
    *["int4"] * 2,  # quantidade_animais, dia_confinamento
    *["float8"] * 2,  # consumo_real, consumo_meta
    "timestamptz",  # data
    *["text"] * 4,  # cod_cliente, fazenda, regra_consumo_meta, raw_object_key
    "timestamptz",  # row_ts
    "text",  # correlation_id
    "int8",  # row_fp
]
_PG_STAGE = "feedlot_stage_consumo"
_COPY_BLOCK = 1 << 20
_MYSQL_BATCH = 2_000


class WarehouseConfigError(RuntimeError):
    """The warehouse URL is missing or names an unsupported database or driver."""


@dataclass(frozen=True)
class LoadCounts:
    """What an upsert did: new rows, rows whose data changed, rows already identical."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: LoadCounts) -> LoadCounts:
        return LoadCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True)
class CopyRows:
    """Rows already encoded as PostgreSQL binary COPY data (``Warehouse.encode_rows``).

    Encoding is CPU work in Python; doing it where the rows are made lets the thread that talks
    to the database spend its time waiting on the server, without the GIL.
    """

    data: bytes
    count: int


@dataclass(slots=True)
class Rejection:
    """A raw line that could not be loaded, with a stable reason code and a readable reason.

    ``fazenda``/``dia`` name the partition it was read from; ``replace_rejections`` sets them from
    its arguments, ``upsert_rejections`` takes them from here or from the raw-zone object key.
    """

    raw_object_key: str
    line_no: int
    reason_code: str
    reason: str
    raw_record: str
    cod_cliente: str | None = None
    fazenda: str | None = None
    dia: date | None = None
    correlation_id: str | None = None


# --- connections -------------------------------------------------------------------------------


def normalize_url(url: str) -> sa.URL:
    """The URL with the supported driver named; a clear error for anything else.

    A bare ``postgresql://`` or ``mysql://`` gets psycopg 3 / PyMySQL (SQLAlchemy would pick
    psycopg2 / mysqlclient); other drivers are refused because the load path uses psycopg 3's
    COPY API.
    """
    try:
        parsed = make_url(url)
    except Exception as err:  # noqa: BLE001 - re-raised with the reason
        raise WarehouseConfigError(f"invalid warehouse URL: {err}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise WarehouseConfigError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql+psycopg://…"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend in ("mysql", "mariadb"):
        if driver not in ("", "pymysql"):
            raise WarehouseConfigError(
                f"unsupported MySQL driver {driver!r}: use mysql+pymysql://…"
            )
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return parsed.set(drivername="mysql+pymysql")
    raise WarehouseConfigError(
        f"unsupported warehouse database {backend!r}: use postgresql+psycopg:// or mysql+pymysql://"
    )


def create_warehouse_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An Engine whose sessions run in UTC, so timestamps mean the same on both databases."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, pool_pre_ping=True, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _session(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                # The staging table of a 25k-row chunk fits in memory (default is 8 MB).
                cur.execute("SET temp_buffers = '64MB'")
            dbapi_connection.commit()

        return engine
    connect_args = {"init_command": "SET time_zone = '+00:00'", **kwargs.pop("connect_args", {})}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _url_from_secret() -> str | None:
    """FEEDLOT_WAREHOUSE_SECRET's URL; None when no secret is configured."""
    settings = Settings()
    secret = settings.warehouse_secret
    if not secret:
        return None
    from feedlot_pipeline.core.aws import client

    try:
        text = client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]
    except Exception as err:  # noqa: BLE001 - re-raised with what to check
        raise WarehouseConfigError(
            f"cannot read the warehouse secret {secret!r} (FEEDLOT_WAREHOUSE_SECRET): {err}"
        ) from None
    key = settings.warehouse_secret_key
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text).get(key)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise WarehouseConfigError(
                f"the warehouse secret {secret!r} is JSON without a string under {key!r} "
                "(FEEDLOT_WAREHOUSE_SECRET_KEY)"
            )
        return value
    return text.strip()


def _cap(text: str, limit: int) -> str:
    """Text that any of the two databases accepts: no NUL characters, at most ``limit`` chars."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[:limit]}…[{cut} more characters]"
    return text


# --- the warehouse -----------------------------------------------------------------------------


class Warehouse:
    """The relational warehouse at one URL (PostgreSQL or MySQL/MariaDB)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_warehouse_engine(url)
        name = self.engine.dialect.name
        self.dialect = "postgresql" if name == "postgresql" else "mysql"
        self._encoder: Any = None  # pooled connection whose cursor only formats COPY data
        self._encoder_lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Warehouse:
        """The warehouse of FEEDLOT_WAREHOUSE_URL, else of the secret FEEDLOT_WAREHOUSE_SECRET.

        The secret (Secrets Manager name or ARN) holds the URL as plain text or as JSON under
        FEEDLOT_WAREHOUSE_SECRET_KEY (``url``). It is how the EC2 worker finds the warehouse: an
        SSM command line is visible in the console, so the URL never travels in one.
        """
        url = Settings().warehouse_url_value() or _url_from_secret()
        if not url:
            raise WarehouseConfigError(
                "FEEDLOT_WAREHOUSE_URL is not set: the warehouse's SQLAlchemy URL with the driver "
                "named, e.g. postgresql+psycopg://user:pass@host:5432/db or mysql+pymysql://… "
                "(or FEEDLOT_WAREHOUSE_SECRET: a Secrets Manager secret holding it)"
            )
        return cls(url)

    def dispose(self) -> None:
        with self._encoder_lock:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        shown = make_url(self.url).render_as_string(hide_password=True)
        return f"Warehouse({shown!r})"

    # --- reference data ------------------------------------------------------------------------

    def clients(self) -> dict[str, str]:
        """cod_cliente → fazenda, the routing table of every record."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(clientes.c.cod_cliente, clientes.c.fazenda))
            return {cod: fazenda for cod, fazenda in rows}

    def add_client(self, cod_cliente: str, fazenda: str, *, replace: bool = False) -> str:
        """Map a client code to a farm; returns "added", "unchanged" or "replaced".

        Idempotent. A code that already maps to another farm is an error unless ``replace``:
        moving a client silently would file its future records under another farm.
        """
        cod = cod_cliente.strip() if isinstance(cod_cliente, str) else ""
        if not cod or len(cod) > 64 or "\x00" in cod:
            raise ValueError(f"invalid cod_cliente {cod_cliente!r}: 1 to 64 characters")
        check_farm(fazenda)
        if fazenda == UNROUTED_FARM:
            raise ValueError(f"fazenda {fazenda!r} is reserved for records that cannot be routed")
        now = self._ts(datetime.now(UTC))
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    current = conn.execute(
                        sa.select(clientes.c.fazenda)
                        .where(clientes.c.cod_cliente == cod)
                        .with_for_update()
                    ).scalar()
                    if current == fazenda:
                        return "unchanged"
                    if current is None:
                        conn.execute(
                            sa.insert(clientes).values(
                                cod_cliente=cod, fazenda=fazenda, created_at=now
                            )
                        )
                        return "added"
                    if not replace:
                        raise ValueError(
                            f"cod_cliente {cod!r} already maps to fazenda {current!r}; "
                            f"pass replace=True (--replace) to move it to {fazenda!r}"
                        )
                    conn.execute(
                        sa.update(clientes)
                        .where(clientes.c.cod_cliente == cod)
                        .values(fazenda=fazenda)
                    )
                    return "replaced"
            except sa.exc.IntegrityError:
                if attempt:  # a concurrent add of the same code won twice: give up
                    raise
        raise AssertionError("unreachable")

    # --- historico_consumo ---------------------------------------------------------------------

    def upsert_consumo(
        self,
        rows: Sequence[tuple] | CopyRows,
        *,
        unique: bool = False,
        assume_new: bool = False,
    ) -> LoadCounts:
        """Insert new rows, update changed ones, leave identical ones alone; one transaction.

        ``rows`` are in ``WAREHOUSE_COLUMNS`` order with timezone-aware datetimes, as
        ``records.clean`` makes them, or (PostgreSQL) the ``CopyRows`` of ``encode_rows``. When
        the same id appears twice the last one wins; pass ``unique=True`` when the caller already
        guarantees distinct ids (required for ``CopyRows``; skips the check).

        ``assume_new`` (PostgreSQL) first tries a plain COPY into historico_consumo, about a third
        cheaper for the server than the staged merge, and falls back to the merge as soon as an
        id already exists: same result either way. Worth it when most rows are expected to be new
        (the loader sets it while the previous chunk was all new).
        """
        if isinstance(rows, CopyRows):
            if self.dialect != "postgresql":
                raise TypeError("CopyRows are PostgreSQL COPY data")
            if not unique:
                raise ValueError("CopyRows cannot be deduplicated: pass unique=True")
            return self._pg_upsert(rows, assume_new) if rows.count else LoadCounts()
        if not rows:
            return LoadCounts()
        if not unique and len({row[0] for row in rows}) != len(rows):
            rows = list({row[0]: row for row in rows}.values())
        if self.dialect == "postgresql":
            return self._pg_upsert(self.encode_rows(rows), assume_new)
        return self._mysql_upsert(rows)

    def encode_rows(self, rows: Sequence[tuple]) -> CopyRows:
        """Encode rows (``WAREHOUSE_COLUMNS`` order) as binary COPY data for ``upsert_consumo``."""
        return self._encode(rows, _PG_COPY_TYPES)

    def encode_keys(self, keys: Sequence[tuple[str, int, str]]) -> CopyRows:
        """(id_treated_data, row_fp, fazenda) keys as binary COPY data for ``stored_as_is``."""
        return self._encode(keys, ["text", "int8", "text"])

    def stored_as_is(self, keys: CopyRows, rule_name: str) -> set[str]:
        """The ids among ``keys`` stored with that very ``row_fp``, farm and rule (PostgreSQL).

        One indexed probe per key, no row is locked or written: what a reload asks before it
        spends time cleaning lines whose rows are already there.
        """
        if self.dialect != "postgresql":
            raise TypeError("stored_as_is reads binary COPY data: PostgreSQL only")
        if not keys.count:
            return set()
        with self.engine.begin() as conn:
            pg = conn.connection.driver_connection
            with pg.cursor() as cur:
                cur.execute(_PG_KEYS_DDL)
                _pg_copy(cur, _PG_KEYS_COPY_SQL, keys)
                cur.execute("SET LOCAL enable_hashjoin = off")
                cur.execute("SET LOCAL enable_mergejoin = off")
                cur.execute(_PG_KEYS_MATCH_SQL, (rule_name,))
                return {row[0] for row in cur.fetchall()}

    def _encode(self, rows: Sequence[tuple], types: list[str]) -> CopyRows:
        if self.dialect != "postgresql":
            raise TypeError("binary COPY data is for PostgreSQL only")
        from psycopg.copy import Copy, FileWriter

        buffer = io.BytesIO()
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self.engine.raw_connection()
            # A cursor that never executes: it only lends its adapters to the formatter.
            cursor = self._encoder.driver_connection.cursor()
            try:
                with Copy(cursor, binary=True, writer=FileWriter(buffer)) as copy:
                    copy.set_types(types)
                    write_row = copy.write_row
                    for row in rows:
                        write_row(row)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    "rows must follow WAREHOUSE_COLUMNS, with timezone-aware datetimes in data "
                    f"and row_ts (as records.clean makes them): {err}"
                ) from err
            finally:
                cursor.close()
        return CopyRows(buffer.getvalue(), len(rows))

    def _pg_upsert(self, rows: CopyRows, assume_new: bool) -> LoadCounts:
        from psycopg.errors import UniqueViolation

        with self.engine.begin() as conn:
            pg = conn.connection.driver_connection
            with pg.cursor() as cur:
                cur.execute(_PG_STAGE_DDL)  # also opens the transaction the savepoint needs
                if assume_new:
                    cur.execute("SAVEPOINT feedlot_direct_copy")
                    try:
                        _pg_copy(cur, _PG_DIRECT_COPY_SQL, rows)
                    except UniqueViolation:
                        cur.execute("ROLLBACK TO SAVEPOINT feedlot_direct_copy")
                    else:
                        cur.execute("RELEASE SAVEPOINT feedlot_direct_copy")
                        return LoadCounts(inserted=rows.count)
                _pg_copy(cur, _PG_STAGE_COPY_SQL, rows)
                cur.execute("SET LOCAL enable_hashjoin = off")
                cur.execute("SET LOCAL enable_mergejoin = off")
                cur.execute(_PG_MERGE_SQL)
                inserted, updated = cur.fetchone()
        return LoadCounts(inserted, updated, rows.count - inserted - updated)

    def _mysql_upsert(self, rows: Sequence[tuple]) -> LoadCounts:
        total = LoadCounts()
        with self.engine.begin() as conn:
            my = conn.connection.driver_connection
            found_rows = bool(my.client_flag & _CLIENT_FOUND_ROWS)
            with my.cursor() as cur:
                for start in range(0, len(rows), _MYSQL_BATCH):
                    batch = [_mysql_row(row) for row in rows[start : start + _MYSQL_BATCH]]
                    ids = [row[0] for row in batch]
                    marks = ", ".join(["%s"] * len(ids))
                    cur.execute(f"{_MYSQL_COUNT_SQL} ({marks})", ids)
                    existing = cur.fetchone()[0]
                    cur.executemany(_MYSQL_UPSERT_SQL, batch)
                    affected = cur.rowcount
                    # Affected rows: 1 per insert, 2 per update, 0 per unchanged row (1 with
                    # CLIENT_FOUND_ROWS, which SQLAlchemy sets).
                    inserted = len(batch) - existing
                    updated = affected - len(batch) if found_rows else (affected - inserted) // 2
                    total = total + LoadCounts(inserted, updated, existing - updated)
        return total

    # --- rejections ----------------------------------------------------------------------------

    def replace_rejections(self, fazenda: str, dia: date, rejections: Sequence[Rejection]) -> None:
        """Make the partition's rejected rows exactly ``rejections``, atomically.

        A rerun of a partition therefore never duplicates a rejection and drops the ones whose
        record now loads.
        """
        check_farm(fazenda)
        table = historico_consumo_rejeitados
        now = self._ts(datetime.now(UTC))
        values = [self._rejection_values(r, fazenda, dia, now) for r in rejections]
        with self.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.fazenda == fazenda, table.c.dia == dia))
            self._upsert_rejection_values(conn, values)

    def upsert_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Insert or overwrite rejections keyed by (raw_object_key, line_no): for bulk loads.

        Each rejection's partition is its own ``fazenda``/``dia`` or, when unset, the one its
        raw-zone object key names.
        """
        values = []
        now = self._ts(datetime.now(UTC))
        for rejection in rejections:
            fazenda, dia = rejection.fazenda, rejection.dia
            if fazenda is None or dia is None:
                try:
                    fazenda, dia = parse_raw_key(rejection.raw_object_key)
                except ValueError:
                    raise ValueError(
                        f"rejection of {rejection.raw_object_key!r} line {rejection.line_no} "
                        "has no partition and its key is not a raw-zone key"
                    ) from None
            values.append(self._rejection_values(rejection, fazenda, dia, now))
        if values:
            with self.engine.begin() as conn:
                self._upsert_rejection_values(conn, values)

    def _rejection_values(
        self, r: Rejection, fazenda: str, dia: date, now: datetime
    ) -> dict[str, Any]:
        return {
            "raw_object_key": r.raw_object_key,
            "line_no": r.line_no,
            "fazenda": fazenda,
            "dia": dia,
            "reason_code": r.reason_code[:32],
            "reason": _cap(r.reason, MAX_REASON_CHARS),
            "cod_cliente": None if r.cod_cliente is None else _cap(r.cod_cliente, 64)[:64],
            "raw_record": _cap(r.raw_record, MAX_RAW_RECORD_CHARS),
            "rejected_at": now,
            "correlation_id": None if r.correlation_id is None else r.correlation_id[:200],
        }

    def _upsert_rejection_values(self, conn: sa.Connection, values: list[dict]) -> None:
        """Write rejection rows; a repeated (raw_object_key, line_no) keeps the last one."""
        if not values:
            return
        values = list({(v["raw_object_key"], v["line_no"]): v for v in values}.values())
        table = historico_consumo_rejeitados
        if self.dialect == "postgresql":
            # COPY into a staging table, then one INSERT … ON CONFLICT: ~20x faster than an
            # executemany when a bulk load rejects tens of thousands of lines.
            pg = conn.connection.driver_connection
            with pg.cursor() as cur:
                cur.execute(_PG_REJECT_STAGE_DDL)
                with cur.copy(_PG_REJECT_COPY_SQL) as copy:
                    copy.set_types(_PG_REJECT_TYPES)
                    for v in values:
                        copy.write_row([v[c] for c in _REJECT_COLUMNS])
                cur.execute(_PG_REJECT_MERGE_SQL)
            return
        from sqlalchemy.dialects.mysql import insert

        stmt = insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in _REJECT_COLUMNS[2:]})
        for start in range(0, len(values), 5_000):
            conn.execute(stmt, values[start : start + 5_000])

    # --- checks --------------------------------------------------------------------------------

    def partition_stats(self, fazenda: str, dia: date) -> dict[str, Any]:
        """What the asset checks need about one (farm, day) partition.

        Keys: rows, distinct_ids, nulls (column → count), consumo_meta_mismatches, unknown_rules,
        rejected, rejected_by_code. The day is the UTC day of ``data``, selected with a range
        predicate so the (fazenda, data) index is used.
        """
        h = historico_consumo
        start = datetime.combine(dia, time(), tzinfo=UTC)
        in_partition = (
            h.c.fazenda == fazenda,
            h.c.data >= self._ts(start),
            h.c.data < self._ts(start + timedelta(days=1)),
        )
        null_counts = [
            sa.func.sum(sa.case((h.c[name].is_(None), 1), else_=0)) for name in REQUIRED_COLUMNS
        ]
        rj = historico_consumo_rejeitados
        with self.engine.connect() as conn:
            counts = conn.execute(
                sa.select(
                    sa.func.count(), sa.func.count(sa.distinct(h.c.id_treated_data)), *null_counts
                ).where(*in_partition)
            ).one()
            inputs = conn.execute(
                sa.select(
                    h.c.regra_consumo_meta,
                    h.c.peso_medio,
                    h.c.peso_entrada,
                    h.c.dia_confinamento,
                    h.c.consumo_meta,
                ).where(*in_partition)
            )
            mismatches, unknown = _consumo_meta_mismatches(inputs)
            by_code = {
                code: int(n)
                for code, n in conn.execute(
                    sa.select(rj.c.reason_code, sa.func.count())
                    .where(rj.c.fazenda == fazenda, rj.c.dia == dia)
                    .group_by(rj.c.reason_code)
                )
            }
        return {
            "rows": int(counts[0]),
            "distinct_ids": int(counts[1]),
            "nulls": {
                name: int(n or 0) for name, n in zip(REQUIRED_COLUMNS, counts[2:], strict=True)
            },
            "consumo_meta_mismatches": mismatches,
            "unknown_rules": sorted(unknown),
            "rejected": sum(by_code.values()),
            "rejected_by_code": by_code,
        }

    # --- helpers -------------------------------------------------------------------------------

    def _ts(self, value: datetime) -> datetime:
        """A UTC timestamp as this database stores it: aware on PostgreSQL, naive on MySQL."""
        if self.dialect == "postgresql":
            return value
        return value.astimezone(UTC).replace(tzinfo=None)


def _consumo_meta_mismatches(rows: Any, tolerance: float = 1e-6) -> tuple[int, set[str]]:
    """Rows whose consumo_meta differs from what their recorded rule computes (or has no rule)."""
    mismatches = 0
    unknown: set[str] = set()
    for regra, peso_medio, peso_entrada, dia, meta in rows:
        rule = RULES.get(regra)
        if rule is None:
            unknown.add(str(regra))
            mismatches += 1
            continue
        if None in (peso_medio, peso_entrada, dia, meta):
            mismatches += 1
            continue
        expected = rule.compute(float(peso_medio), float(peso_entrada), int(dia))
        if not math.isclose(expected, float(meta), rel_tol=0.0, abs_tol=tolerance):
            mismatches += 1
    return mismatches, unknown


def _pg_copy(cur: Any, sql: str, rows: CopyRows) -> None:
    with cur.copy(sql) as copy:
        view = memoryview(rows.data)
        for start in range(0, len(view), _COPY_BLOCK):
            copy.write(view[start : start + _COPY_BLOCK])


def _mysql_row(row: tuple) -> tuple:
    """A row for PyMySQL: timestamps as naive UTC (DATETIME(6) holds UTC)."""
    data, row_ts = row[10], row[15]
    if data.tzinfo is not None:
        data = data.astimezone(UTC).replace(tzinfo=None)
    if row_ts.tzinfo is not None:
        row_ts = row_ts.astimezone(UTC).replace(tzinfo=None)
    return (*row[:10], data, *row[11:15], row_ts, *row[16:])


# --- SQL ---------------------------------------------------------------------------------------

_COLS = ", ".join(WAREHOUSE_COLUMNS)
_PG_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} "
    "(LIKE historico_consumo INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_STAGE_COPY_SQL = f"COPY {_PG_STAGE} ({_COLS}) FROM STDIN (FORMAT BINARY)"
_PG_DIRECT_COPY_SQL = f"COPY historico_consumo ({_COLS}) FROM STDIN (FORMAT BINARY)"
# Rows identical to the stored ones are filtered out by an anti-join before the INSERT: an
# ON CONFLICT DO UPDATE whose WHERE is false still locks (and so writes) every existing row.
# The staging table has no statistics, so the planner already probes the primary key per staged
# row; the SET LOCALs in _pg_upsert keep it from ever choosing to scan the whole table.
_PG_MERGE_SQL = f"""
WITH merged AS (
    INSERT INTO historico_consumo AS h ({_COLS})
    SELECT {", ".join(f"s.{c}" for c in WAREHOUSE_COLUMNS)} FROM {_PG_STAGE} AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM historico_consumo AS old
        WHERE old.id_treated_data = s.id_treated_data
          AND ({", ".join(f"old.{c}" for c in DATA_COLUMNS)})
              IS NOT DISTINCT FROM ({", ".join(f"s.{c}" for c in DATA_COLUMNS)})
    )
    ON CONFLICT (id_treated_data) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in WAREHOUSE_COLUMNS[1:])}
    WHERE ({", ".join(f"h.{c}" for c in DATA_COLUMNS)})
        IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in DATA_COLUMNS)})
    RETURNING (h.xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
"""
_PG_KEYS = "feedlot_stage_keys"
_PG_KEYS_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_KEYS} "
    "(id_treated_data varchar(36) NOT NULL, row_fp bigint NOT NULL, fazenda varchar(64) NOT NULL)"
    " ON COMMIT DELETE ROWS"
)
_PG_KEYS_COPY_SQL = f"COPY {_PG_KEYS} (id_treated_data, row_fp, fazenda) FROM STDIN (FORMAT BINARY)"
# LATERAL fixes the plan's shape: the keys outside, one primary-key probe each. A plain join
# let the planner, without statistics on a table just loaded, scan historico_consumo against
# every key (measured: 220 s instead of 0.1 s for 25k keys).
_PG_KEYS_MATCH_SQL = f"""
SELECT k.id_treated_data FROM {_PG_KEYS} AS k
CROSS JOIN LATERAL (
    SELECT 1 FROM historico_consumo AS h
    WHERE h.id_treated_data = k.id_treated_data AND h.row_fp = k.row_fp
      AND h.fazenda = k.fazenda AND h.regra_consumo_meta = %s
    LIMIT 1
) AS stored
"""
_REJECT_COLUMNS = tuple(c.name for c in historico_consumo_rejeitados.columns)
_PG_REJECT_TYPES = ["text", "int4", "text", "date", "text", "text", "text", "text", "timestamptz"]
_PG_REJECT_TYPES.append("text")  # correlation_id
_PG_REJECT_STAGE = "feedlot_stage_rejeitados"
_PG_REJECT_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_PG_REJECT_STAGE} "
    "(LIKE historico_consumo_rejeitados INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PG_REJECT_COPY_SQL = (
    f"COPY {_PG_REJECT_STAGE} ({', '.join(_REJECT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
_PG_REJECT_MERGE_SQL = f"""
INSERT INTO historico_consumo_rejeitados ({", ".join(_REJECT_COLUMNS)})
SELECT {", ".join(_REJECT_COLUMNS)} FROM {_PG_REJECT_STAGE}
ON CONFLICT (raw_object_key, line_no) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _REJECT_COLUMNS[2:])}
"""
_MYSQL_CHANGED = "NOT (" + " AND ".join(f"{c} <=> VALUES({c})" for c in DATA_COLUMNS) + ")"
# MySQL assigns left to right and later expressions see earlier assignments: the lineage columns
# are decided first, while the data columns still hold the stored values.
_MYSQL_UPSERT_SQL = (
    f"INSERT INTO historico_consumo ({_COLS}) VALUES ({', '.join(['%s'] * len(WAREHOUSE_COLUMNS))})"
    " ON DUPLICATE KEY UPDATE "
    f"row_ts = IF({_MYSQL_CHANGED}, VALUES(row_ts), row_ts), "
    f"raw_object_key = IF({_MYSQL_CHANGED}, VALUES(raw_object_key), raw_object_key), "
    f"correlation_id = IF({_MYSQL_CHANGED}, VALUES(correlation_id), correlation_id), "
    f"row_fp = IF({_MYSQL_CHANGED}, VALUES(row_fp), row_fp), "
    + ", ".join(f"{c} = VALUES({c})" for c in DATA_COLUMNS)
)
_MYSQL_COUNT_SQL = "SELECT COUNT(*) FROM historico_consumo WHERE id_treated_data IN"
_CLIENT_FOUND_ROWS = 2  # pymysql.constants.CLIENT.FOUND_ROWS
