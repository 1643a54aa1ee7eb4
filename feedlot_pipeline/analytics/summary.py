"""consumo_diario in the warehouse: rebuilt per farm × day partition with one INSERT … SELECT.

The aggregation runs in the database (PostgreSQL or MySQL/MariaDB), for any number of partitions
at once: the partitions are staged in a session temporary table and joined to historico_consumo
through its (fazenda, data) index, so 1,000 small partitions cost three statements, not 3,000.
Everything here runs on a connection the caller holds in a transaction: the caller decides when
the new rows become visible (``partition.refresh_partitions`` commits only after the partition's
files and catalog entries are written).

Rules of the summary (one row per farm × day × lot × pen):

- ``quantidade_animais``: animals fed (summed when the lot × pen reported more than once that day);
- ``consumo_real_cabeca`` / ``consumo_meta_cabeca`` / ``peso_medio``: per head, weighted by
  animals (a single report gives its own values);
- ``desvio_pct``: (real − meta) / meta × 100, NULL when meta is 0;
- ``consumo_total_kg``: Σ consumo_real × quantidade_animais;
- ``dia_confinamento``: the latest; ``regra_consumo_meta``: the rule (the greatest name if rows
  of one lot × pen were made by different rules); ``ultimo_processamento``: the newest ``row_ts``.

Values are not rounded: the same rows give the same sums in the same plan, so a rerun writes the
very same rows (rounding through numeric cost a third of the rebuild).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from feedlot_pipeline.warehouse.schema import consumo_diario
from feedlot_pipeline.warehouse.store import Warehouse

UTC = timezone.utc
Partition = tuple[str, date]

SUMMARY_COLUMNS = tuple(c.name for c in consumo_diario.columns)
_STAGE = "feedlot_analytics_parts"
_PG_STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (fazenda varchar(64) NOT NULL, dia date NOT NULL, "
    "d0 timestamptz NOT NULL, d1 timestamptz NOT NULL) ON COMMIT DELETE ROWS"
)
_MY_STAGE_DDL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (fazenda varchar(64) COLLATE utf8mb4_bin "
    "NOT NULL, dia date NOT NULL, d0 datetime(6) NOT NULL, d1 datetime(6) NOT NULL) "
    "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)


@dataclass(frozen=True)
class PartitionCounts:
    """What the warehouse holds for one farm × day, read after the rebuild (the checks' input).

    ``lots_expected`` is the number of distinct lot × pen pairs in historico_consumo, ``lots``
    the rows of consumo_diario; the kg totals are Σ consumo_real × quantidade_animais on each side.
    """

    rows: int = 0
    lots_expected: int = 0
    lots: int = 0
    total_kg_historico: float = 0.0
    total_kg: float = 0.0
    rejected: int = 0

    @property
    def reconciles(self) -> bool:
        tolerance = 1e-6 * max(1.0, abs(self.total_kg_historico)) + 1e-6 * self.lots
        return (
            self.lots == self.lots_expected
            and abs(self.total_kg - self.total_kg_historico) <= tolerance
        )


def day_window(dia: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day, the range a partition's ``data`` falls in."""
    start = datetime.combine(dia, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _ts(dialect: str, value: datetime) -> datetime:
    """Aware on PostgreSQL, naive UTC on MySQL (DATETIME(6) holds UTC)."""
    return value if dialect == "postgresql" else value.astimezone(UTC).replace(tzinfo=None)


def connect(warehouse: Warehouse) -> sa.Connection:
    """A connection to rebuild and read the summaries on (the caller opens the transaction)."""
    conn = warehouse.engine.connect()
    if warehouse.dialect == "mysql":
        # INSERT … SELECT under REPEATABLE READ would lock the historico_consumo rows it reads
        # until the chunk commits; the loader must not wait on the analytics.
        conn = conn.execution_options(isolation_level="READ COMMITTED")
    else:
        # One snapshot for the whole chunk: the rows read for the Parquet file and the checks
        # and the rows consumo_diario is built from must be the same rows while loads go on.
        # Under READ COMMITTED each statement saw its own, and a load committing between them
        # failed consumo_diario_reconciles (661 partitions of one refresh at 100 records/s).
        # PostgreSQL takes no locks for it; the loader never waits.
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def _dialect(conn: sa.Connection) -> str:
    return "postgresql" if conn.dialect.name == "postgresql" else "mysql"


def stage_partitions(conn: sa.Connection, partitions: Sequence[Partition]) -> None:
    """Put ``partitions`` in this session's staging table (emptied first)."""
    dialect = _dialect(conn)
    if dialect == "postgresql":
        # These statements are short: compiling them (JIT) costs more than it saves.
        conn.execute(sa.text("SET LOCAL jit = off"))
    conn.execute(sa.text(_PG_STAGE_DDL if dialect == "postgresql" else _MY_STAGE_DDL))
    conn.execute(sa.text(f"DELETE FROM {_STAGE}"))
    rows = []
    for fazenda, dia in dict.fromkeys(partitions):
        d0, d1 = day_window(dia)
        rows.append({"f": fazenda, "d": dia, "d0": _ts(dialect, d0), "d1": _ts(dialect, d1)})
    if rows:
        conn.execute(
            sa.text(f"INSERT INTO {_STAGE} (fazenda, dia, d0, d1) VALUES (:f, :d, :d0, :d1)"),
            rows,
        )


def delete(conn: sa.Connection, partitions: Sequence[Partition]) -> None:
    """Delete the consumo_diario rows of ``partitions`` (staged first); caller's transaction."""
    stage_partitions(conn, partitions)
    if _dialect(conn) == "postgresql":
        conn.execute(
            sa.text(
                f"DELETE FROM consumo_diario AS c USING {_STAGE} AS p "
                "WHERE c.fazenda = p.fazenda AND c.dia = p.dia"
            )
        )
    else:
        conn.execute(
            sa.text(
                f"DELETE c FROM consumo_diario AS c JOIN {_STAGE} AS p "
                "ON c.fazenda = p.fazenda AND c.dia = p.dia"
            )
        )


def rebuild(conn: sa.Connection, partitions: Sequence[Partition]) -> int:
    """Replace the consumo_diario rows of ``partitions`` by a fresh aggregation; rows written.

    Runs in the caller's transaction. Leaves the partitions staged.
    """
    delete(conn, partitions)
    return conn.execute(sa.text(_insert_sql(_dialect(conn)))).rowcount


def _aggregates() -> str:
    n = "h.quantidade_animais"
    real = f"SUM(h.consumo_real * {n})"
    meta = f"SUM(h.consumo_meta * {n})"
    animals = f"SUM({n})"
    return f"""COUNT(*),
       {animals},
       {real} / NULLIF({animals}, 0),
       {meta} / NULLIF({animals}, 0),
       100 * ({real} - {meta}) / NULLIF({meta}, 0),
       {real},
       SUM(h.peso_medio * {n}) / NULLIF({animals}, 0),
       MAX(h.dia_confinamento),
       MAX(h.regra_consumo_meta),
       MAX(h.row_ts)"""


def _insert_sql(dialect: str) -> str:
    return f"""
INSERT INTO consumo_diario ({", ".join(SUMMARY_COLUMNS)})
SELECT p.fazenda, p.dia, h.id_lote, h.id_curral,
       {_aggregates()}
FROM {_partition_rows(dialect)}
GROUP BY p.fazenda, p.dia, h.id_lote, h.id_curral
"""


def insert_returning_sql(returning: str) -> str:
    """PostgreSQL: build one partition's rows and stream them back in the same statement, as
    ``COPY (INSERT … RETURNING …) TO STDOUT`` — no second pass over consumo_diario to read what
    was written. Parameters :f, :d, :d0, :d1; ``returning`` is the column list to send."""
    return f"""
INSERT INTO consumo_diario ({", ".join(SUMMARY_COLUMNS)})
SELECT CAST(:f AS varchar), CAST(:d AS date), h.id_lote, h.id_curral,
       {_aggregates()}
FROM historico_consumo AS h
WHERE h.fazenda = :f AND h.data >= :d0 AND h.data < :d1
GROUP BY h.id_lote, h.id_curral
ORDER BY h.id_lote COLLATE "C", h.id_curral COLLATE "C"
RETURNING {returning}
"""


def _partition_rows(dialect: str) -> str:
    """The staged partitions joined to their historico_consumo rows through the (fazenda, data)
    index, one range scan per partition. On PostgreSQL LATERAL fixes that plan: the staging table
    has no statistics, and a hash join on fazenda alone compares every row of a farm with every
    staged day of it (30 days of one farm: 30 comparisons per row)."""
    if dialect == "postgresql":
        return (
            f"{_STAGE} AS p CROSS JOIN LATERAL (SELECT * FROM historico_consumo AS x "
            "WHERE x.fazenda = p.fazenda AND x.data >= p.d0 AND x.data < p.d1 OFFSET 0) AS h"
        )
    return (
        f"{_STAGE} AS p JOIN historico_consumo AS h "
        "ON h.fazenda = p.fazenda AND h.data >= p.d0 AND h.data < p.d1"
    )


def counts(
    conn: sa.Connection, partitions: Sequence[Partition]
) -> dict[Partition, PartitionCounts]:
    """Rows, lots and kg totals on both sides, and rejections, of every partition (3 queries).

    Reads what is in the tables (in the caller's transaction, so it sees a rebuild not yet
    committed), never what the rebuild reported.
    """
    stage_partitions(conn, partitions)
    dialect = _dialect(conn)
    pairs = (
        "COUNT(DISTINCT (h.id_lote, h.id_curral))"
        if dialect == "postgresql"
        else "COUNT(DISTINCT h.id_lote, h.id_curral)"
    )
    found: dict[Partition, dict[str, Any]] = {p: {} for p in dict.fromkeys(partitions)}
    for fazenda, dia, rows, lots, kg in conn.execute(
        sa.text(
            f"SELECT p.fazenda, p.dia, COUNT(*), {pairs}, "
            "SUM(h.consumo_real * h.quantidade_animais) "
            f"FROM {_partition_rows(dialect)} GROUP BY p.fazenda, p.dia"
        )
    ):
        found[(fazenda, _date(dia))].update(
            rows=int(rows), lots_expected=int(lots), total_kg_historico=float(kg or 0)
        )
    for fazenda, dia, lots, kg in conn.execute(
        sa.text(
            "SELECT c.fazenda, c.dia, COUNT(*), SUM(c.consumo_total_kg) "
            f"FROM {_STAGE} AS p JOIN consumo_diario AS c "
            "ON c.fazenda = p.fazenda AND c.dia = p.dia GROUP BY c.fazenda, c.dia"
        )
    ):
        found[(fazenda, _date(dia))].update(lots=int(lots), total_kg=float(kg or 0))
    for fazenda, dia, rejected in conn.execute(
        sa.text(
            "SELECT r.fazenda, r.dia, COUNT(*) "
            f"FROM {_STAGE} AS p JOIN historico_consumo_rejeitados AS r "
            "ON r.fazenda = p.fazenda AND r.dia = p.dia GROUP BY r.fazenda, r.dia"
        )
    ):
        found[(fazenda, _date(dia))].update(rejected=int(rejected))
    return {p: PartitionCounts(**v) for p, v in found.items()}


def rejected_counts(conn: sa.Connection, partitions: Sequence[Partition]) -> dict[Partition, int]:
    """Rejected records of each partition (historico_consumo_rejeitados, by its (fazenda, dia)
    index)."""
    stage_partitions(conn, partitions)
    return {
        (fazenda, _date(dia)): int(n)
        for fazenda, dia, n in conn.execute(
            sa.text(
                "SELECT r.fazenda, r.dia, COUNT(*) "
                f"FROM {_STAGE} AS p JOIN historico_consumo_rejeitados AS r "
                "ON r.fazenda = p.fazenda AND r.dia = p.dia GROUP BY r.fazenda, r.dia"
            )
        )
    }


def anomalies(
    conn: sa.Connection, fazenda: str, dia: date, threshold_pct: float, limit: int = 200
) -> list[dict[str, Any]]:
    """Lots × pens of the partition whose |desvio_pct| exceeds the threshold, worst first."""
    c = consumo_diario
    rows = conn.execute(
        sa.select(
            c.c.id_lote,
            c.c.id_curral,
            c.c.quantidade_animais,
            c.c.consumo_real_cabeca,
            c.c.consumo_meta_cabeca,
            c.c.desvio_pct,
        )
        .where(
            c.c.fazenda == fazenda,
            c.c.dia == dia,
            sa.func.abs(c.c.desvio_pct) > threshold_pct,
        )
        .order_by(sa.func.abs(c.c.desvio_pct).desc(), c.c.id_lote, c.c.id_curral)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


def count_anomalies(
    conn: sa.Connection, partitions: Sequence[Partition], threshold_pct: float
) -> dict[Partition, int]:
    """How many lots × pens of each partition exceed the threshold (one query)."""
    stage_partitions(conn, partitions)
    out = dict.fromkeys(dict.fromkeys(partitions), 0)
    for fazenda, dia, n in conn.execute(
        sa.text(
            "SELECT c.fazenda, c.dia, COUNT(*) "
            f"FROM {_STAGE} AS p JOIN consumo_diario AS c "
            "ON c.fazenda = p.fazenda AND c.dia = p.dia "
            "WHERE ABS(c.desvio_pct) > :t GROUP BY c.fazenda, c.dia"
        ),
        {"t": threshold_pct},
    ):
        out[(fazenda, _date(dia))] = int(n)
    return out


def _date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value
