"""The warehouse: reference data, latest-landing-wins loads, the load ledger, check inputs.

One class, ``Warehouse``, for PostgreSQL (``postgresql+psycopg://``, psycopg 3) and MySQL/MariaDB
(``mysql+pymysql://``); the dialect's SQL lives in ``postgres`` and ``mysql``. Every statement is
parameterised; table and column names come only from ``schema`` and ``batches``.

Loads are idempotent by construction: ``id_treated_data`` is the key, an identical record writes
nothing (``row_ts`` keeps the first processing time), a changed record replaces the stored
version only when it landed later (the loser is kept in historico_consumo_versoes), and
rejections are keyed by (object, line).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from feedlot_pipeline.core.lake import check_farm
from feedlot_pipeline.core.records import UNROUTED_FARM
from feedlot_pipeline.warehouse import mysql, postgres
from feedlot_pipeline.warehouse.batches import (
    REQUIRED_COLUMNS,
    VERSION_COLUMNS,
    CopyRows,
    LedgerEntry,
    LoadCounts,
)
from feedlot_pipeline.warehouse.engine import (
    WarehouseConfigError,
    create_warehouse_engine,
    normalize_url,
    resolve_url,
    shown,
)
from feedlot_pipeline.warehouse.schema import (
    clientes,
    historico_consumo,
    historico_consumo_cargas,
    historico_consumo_rejeitados,
    historico_consumo_versoes,
)
from feedlot_pipeline.warehouse.verdicts import Rejection

__all__ = [
    "CopyRows",
    "LedgerEntry",
    "LoadCounts",
    "Rejection",
    "Warehouse",
    "WarehouseConfigError",
    "create_warehouse_engine",
    "normalize_url",
]

UTC = timezone.utc
# Limits of historico_consumo_rejeitados, applied before writing so a hostile line cannot fail
# the load: raw_record is MEDIUMTEXT (16 MiB) on MySQL.
MAX_RAW_RECORD_CHARS = 1_000_000
MAX_REASON_CHARS = 2_000
_KEY_BATCH = 1_000
# What the checks read back of the rows a load wrote (joined on the ids it sent).
_VERIFY_COLUMNS = (
    "id_treated_data",
    "fazenda",
    "data",
    "regra_consumo_meta",
    "peso_medio",
    "peso_entrada",
    "dia_confinamento",
    "consumo_meta",
)
_NULLS = " + ".join(f"(CASE WHEN h.{c} IS NULL THEN 1 ELSE 0 END)" for c in REQUIRED_COLUMNS)
_VERIFY_SQL = (
    f"SELECT {', '.join(f'h.{c}' for c in _VERIFY_COLUMNS)}, {_NULLS} "
    "FROM {ids} AS i JOIN historico_consumo AS h ON h.id_treated_data = i.id_treated_data"
)


def _cap(text: str, limit: int) -> str:
    """Text that any of the two databases accepts: no NUL characters, at most ``limit`` chars."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if len(text) > limit:
        cut = len(text) - limit
        text = f"{text[:limit]}…[{cut} more characters]"
    return text


class Warehouse:
    """The relational warehouse at one URL (PostgreSQL or MySQL/MariaDB)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_warehouse_engine(url)
        self.dialect = "postgresql" if self.engine.dialect.name == "postgresql" else "mysql"
        self._encoder = postgres.Encoder(self.engine) if self.dialect == "postgresql" else None

    @classmethod
    def from_env(cls) -> Warehouse:
        """The warehouse of FEEDLOT_WAREHOUSE_URL, else of the secret FEEDLOT_WAREHOUSE_SECRET.

        The secret (Secrets Manager name or ARN) holds the URL as plain text or as JSON under
        FEEDLOT_WAREHOUSE_SECRET_KEY (``url``). It is how the EC2 worker finds the warehouse: an
        SSM command line is visible in the console, so the URL never travels in one.
        """
        return cls(resolve_url())

    def dispose(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"Warehouse({shown(self.url)!r})"

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

    def encode_rows(self, rows: Sequence[tuple]) -> CopyRows:
        """Rows (``WAREHOUSE_COLUMNS`` order) as binary COPY data for ``upsert_consumo``."""
        return self._pg().encode(rows, postgres.COPY_TYPES)

    def encode_keys(self, keys: Sequence[tuple[str, int, str]]) -> CopyRows:
        """(id_treated_data, row_fp, fazenda) keys as binary COPY data for ``stored_as_is``."""
        return self._pg().encode(keys, ["text", "int8", "text"])

    def upsert_consumo(
        self,
        rows: Sequence[tuple] | CopyRows,
        *,
        per_object: Mapping[str, int] | None = None,
        assume_new: bool = False,
    ) -> dict[str, LoadCounts]:
        """Load rows of distinct ids in one transaction; what happened to them, per raw object.

        New ids are inserted; a stored id whose data differs is replaced only by a later landing
        (its old version archived), else the incoming version is archived as superseded;
        identical rows write nothing. ``rows`` are in ``WAREHOUSE_COLUMNS`` order with
        timezone-aware datetimes, as ``records.clean`` makes them, or (PostgreSQL) the
        ``CopyRows`` of ``encode_rows`` together with ``per_object`` (rows per raw object).
        ``assume_new`` (PostgreSQL) first tries a plain COPY into historico_consumo, about a third
        cheaper for the server, falling back to the merge as soon as an id exists.
        """
        if isinstance(rows, CopyRows):
            if self.dialect != "postgresql":
                raise TypeError("CopyRows are PostgreSQL COPY data")
            if per_object is None:
                raise ValueError("CopyRows need per_object: rows per raw object")
            if not rows.count:
                return {}
            return postgres.upsert(self.engine, rows, assume_new, dict(per_object))
        if not rows:
            return {}
        if len({row[0] for row in rows}) != len(rows):
            raise ValueError(
                "upsert_consumo takes distinct ids: the loader decides between versions"
            )
        if self.dialect == "postgresql":
            counts: dict[str, int] = {}
            for row in rows:
                counts[row[14]] = counts.get(row[14], 0) + 1
            return postgres.upsert(self.engine, self.encode_rows(rows), assume_new, counts)
        return mysql.upsert(self.engine, rows)

    def archive_versions(self, versions: Sequence[tuple[tuple, str]]) -> None:
        """Keep versions that lost inside one load (``superseded`` by ``winner key``)."""
        if not versions:
            return
        now = self._ts(datetime.now(UTC))
        values = []
        for row, winner in versions:
            stored = mysql.naive_utc(row) if self.dialect != "postgresql" else row
            values.append(
                dict(zip(VERSION_COLUMNS, (*stored, "superseded", now, winner), strict=True))
            )
            if values[-1]["raw_line_no"] is None:
                values[-1]["raw_line_no"] = 0
        table = historico_consumo_versoes
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                stmt = pg_insert(table).on_conflict_do_nothing()
            else:
                from sqlalchemy.dialects.mysql import insert as my_insert

                stmt = my_insert(table)
                stmt = stmt.on_duplicate_key_update(version_status=stmt.inserted.version_status)
            conn.execute(stmt, values)

    def stored_as_is(self, keys: CopyRows, rule_name: str) -> set[str]:
        """The ids among ``keys`` stored with that very ``row_fp``, farm and rule (PostgreSQL).

        One indexed probe per key, no row is locked or written: what a reload asks before it
        spends time cleaning lines whose rows are already there.
        """
        if self.dialect != "postgresql":
            raise TypeError("stored_as_is reads binary COPY data: PostgreSQL only")
        return postgres.stored_as_is(self.engine, keys, rule_name)

    def stored_rows(self, ids: Sequence[str]) -> list[tuple]:
        """For the checks: the stored rows of ``ids`` (``_VERIFY_COLUMNS``, then null count)."""
        ids = list(ids)
        if self.dialect == "postgresql":
            encoded = self._pg().encode([(i,) for i in ids], ["text"])
            return postgres.stored_rows(self.engine, encoded, _VERIFY_SQL.format(ids=postgres.IDS))
        return mysql.stored_rows(self.engine, ids, _VERIFY_SQL.format(ids=mysql.IDS))

    def partition_row_counts(
        self, partitions: Iterable[tuple[str, date]]
    ) -> dict[tuple[str, date], int]:
        """Rows of historico_consumo per (farm, day), each a range of the (fazenda, data) index."""
        h = historico_consumo
        partitions = sorted(set(partitions))
        out = {p: 0 for p in partitions}
        day = sa.func.date(h.c.data)
        with self.engine.connect() as conn:
            for start in range(0, len(partitions), 200):
                ranges = [
                    sa.and_(
                        h.c.fazenda == fazenda,
                        h.c.data >= self._ts(datetime.combine(dia, time(), tzinfo=UTC)),
                        h.c.data
                        < self._ts(datetime.combine(dia, time(), tzinfo=UTC)) + timedelta(days=1),
                    )
                    for fazenda, dia in partitions[start : start + 200]
                ]
                for fazenda, dia, n in conn.execute(
                    sa.select(h.c.fazenda, day, sa.func.count())
                    .where(sa.or_(*ranges))
                    .group_by(h.c.fazenda, day)
                ):
                    d = dia if isinstance(dia, date) else date.fromisoformat(str(dia)[:10])
                    out[(fazenda, d)] = int(n)
        return out

    def partition_rejection_counts(
        self, partitions: Iterable[tuple[str, date]]
    ) -> dict[tuple[str, date], int]:
        """Rejections filed under each (farm, day)."""
        rj = historico_consumo_rejeitados
        out = {p: 0 for p in partitions}
        with self.engine.connect() as conn:
            for fazenda, dia in list(out):
                out[(fazenda, dia)] = int(
                    conn.execute(
                        sa.select(sa.func.count()).where(rj.c.fazenda == fazenda, rj.c.dia == dia)
                    ).scalar_one()
                )
        return out

    # --- rejections ----------------------------------------------------------------------------

    def replace_rejections(self, fazenda: str, dia: date, rejections: Sequence[Rejection]) -> None:
        """Make the partition's rejected rows exactly ``rejections``, atomically.

        What a rebuild of a whole partition writes: a rerun never duplicates a rejection and
        drops the ones whose record now loads.
        """
        check_farm(fazenda)
        table = historico_consumo_rejeitados
        now = self._ts(datetime.now(UTC))
        values = [self._rejection_values(r, fazenda, dia, now) for r in rejections]
        with self.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.fazenda == fazenda, table.c.dia == dia))
            self._upsert_rejection_values(conn, values)

    def replace_object_rejections(
        self, keys: Iterable[str], rejections: Sequence[Rejection]
    ) -> None:
        """Make the rejections of the raw objects ``keys`` exactly ``rejections``, atomically.

        What a load of some objects writes: each rejection is filed under its own ``fazenda`` and
        ``dia`` (the partition of the object it was read from).
        """
        table = historico_consumo_rejeitados
        now = self._ts(datetime.now(UTC))
        values = []
        for r in rejections:
            if r.fazenda is None or r.dia is None:
                raise ValueError(
                    f"rejection of {r.raw_object_key!r} line {r.line_no} has no partition"
                )
            values.append(self._rejection_values(r, r.fazenda, r.dia, now))
        keys = sorted(set(keys))
        with self.engine.begin() as conn:
            for start in range(0, len(keys), _KEY_BATCH):
                batch = keys[start : start + _KEY_BATCH]
                conn.execute(sa.delete(table).where(table.c.raw_object_key.in_(batch)))
            self._upsert_rejection_values(conn, values)

    def filed_rejections(
        self, identities: Iterable[tuple], exclude_keys: Iterable[str] = ()
    ) -> set[tuple]:
        """Which rejection identities (farm, day, line fingerprint, code) are filed already,
        against objects other than ``exclude_keys`` (those a load is about to replace)."""
        wanted = {i for i in identities if i[2] is not None}
        if not wanted:
            return set()
        table = historico_consumo_rejeitados
        excluded = set(exclude_keys)
        fps = sorted({i[2] for i in wanted})
        found: set[tuple] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(fps), _KEY_BATCH):
                rows = conn.execute(
                    sa.select(
                        table.c.fazenda,
                        table.c.dia,
                        table.c.record_fp,
                        table.c.reason_code,
                        table.c.raw_object_key,
                    ).where(table.c.record_fp.in_(fps[start : start + _KEY_BATCH]))
                )
                for fazenda, dia, fp, code, key in rows:
                    if key in excluded:
                        continue
                    day = dia if isinstance(dia, date) else date.fromisoformat(str(dia)[:10])
                    identity = (fazenda, day, fp, code)
                    if identity in wanted:
                        found.add(identity)
        return found

    def rejection_counts(self, keys: Iterable[str]) -> dict[str, int]:
        """Rejections filed against each of the raw objects ``keys``."""
        table = historico_consumo_rejeitados
        keys = sorted(set(keys))
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _KEY_BATCH):
                batch = keys[start : start + _KEY_BATCH]
                for key, n in conn.execute(
                    sa.select(table.c.raw_object_key, sa.func.count())
                    .where(table.c.raw_object_key.in_(batch))
                    .group_by(table.c.raw_object_key)
                ):
                    out[key] = int(n)
        return out

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
            "record_fp": r.record_fp,
        }

    def _upsert_rejection_values(self, conn: sa.Connection, values: list[dict]) -> None:
        """Write rejection rows; a repeated (raw_object_key, line_no) keeps the last one."""
        if not values:
            return
        values = list({(v["raw_object_key"], v["line_no"]): v for v in values}.values())
        if self.dialect == "postgresql":
            postgres.upsert_rejections(conn, values)
        else:
            mysql.upsert_rejections(conn, values)

    # --- the load ledger -----------------------------------------------------------------------

    def loaded_objects(self, keys: Iterable[str]) -> set[str]:
        """The raw objects among ``keys`` already loaded (in historico_consumo_cargas)."""
        table = historico_consumo_cargas
        keys = sorted(set(keys))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), _KEY_BATCH):
                batch = keys[start : start + _KEY_BATCH]
                found.update(
                    conn.execute(
                        sa.select(table.c.raw_object_key).where(table.c.raw_object_key.in_(batch))
                    ).scalars()
                )
        return found

    def partitions_loaded_between(
        self, since: datetime | None, until: datetime
    ) -> list[tuple[str, date]]:
        """(fazenda, dia) of the raw objects loaded in (since, until], by the ledger: what every
        load path (stream batches, rebuilds, the worker) records."""
        table = historico_consumo_cargas
        query = sa.select(table.c.fazenda, table.c.dia).where(table.c.loaded_at <= self._ts(until))
        if since is not None:
            query = query.where(table.c.loaded_at > self._ts(since))
        with self.engine.connect() as conn:
            rows = conn.execute(query.distinct().order_by(table.c.fazenda, table.c.dia)).all()
        return [(f, d if isinstance(d, date) else date.fromisoformat(str(d))) for f, d in rows]

    def record_loads(self, entries: Sequence[LedgerEntry], run_id: str | None) -> None:
        """Write (or rewrite) the ledger rows of the raw objects a load read."""
        if not entries:
            return
        now = self._ts(datetime.now(UTC))
        values = [
            {
                "raw_object_key": e.raw_object_key,
                "fazenda": e.fazenda,
                "dia": e.dia,
                "landed_at": None if e.landed_at is None else self._ts(e.landed_at),
                "lines": e.lines,
                "inserted": e.inserted,
                "updated": e.updated,
                "unchanged": e.unchanged,
                "superseded": e.superseded,
                "rejected": e.rejected,
                "loaded_at": now,
                "run_id": run_id,
            }
            for e in entries
        ]
        table = historico_consumo_cargas
        update = [c.name for c in table.columns if c.name != "raw_object_key"]
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                stmt = pg_insert(table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["raw_object_key"], set_={c: stmt.excluded[c] for c in update}
                )
            else:
                from sqlalchemy.dialects.mysql import insert as my_insert

                stmt = my_insert(table)
                stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in update})
            for start in range(0, len(values), 5_000):
                conn.execute(stmt, values[start : start + 5_000])

    # --- helpers -------------------------------------------------------------------------------

    def _pg(self) -> postgres.Encoder:
        if self._encoder is None:
            raise TypeError("binary COPY data is for PostgreSQL only")
        return self._encoder

    def _ts(self, value: datetime) -> datetime:
        """A UTC timestamp as this database stores it: aware on PostgreSQL, naive on MySQL."""
        if self.dialect == "postgresql":
            return value
        return value.astimezone(UTC).replace(tzinfo=None)
