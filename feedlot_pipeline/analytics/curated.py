"""The curated zone: typed Parquet per table and farm × day, Hive-style, and its Arrow schemas.

Layout (processed bucket): ``curated/<table>/fazenda=<f>/dia=<yyyy-mm-dd>/part-0.parquet`` for
``historico_consumo`` and ``consumo_diario``. The partition columns live in the path only (as Hive,
Glue and Athena expect); one file per partition with a fixed name, so a rerun overwrites it and
never adds a second one. Rows are read from the warehouse and written in record batches (row
groups of ``ROW_GROUP_ROWS``), so a partition never has to fit in memory as Python objects.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from feedlot_pipeline.analytics.summary import _dialect, _ts, day_window

ROW_GROUP_ROWS = 65_536
_FETCH_ROWS = 50_000
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class CuratedTable:
    """One curated table: its warehouse source, its file columns (Arrow) and its Glue types."""

    name: str
    source: str  # warehouse table
    schema: pa.Schema  # file columns, partition columns excluded
    glue_types: dict[str, str]
    comments: dict[str, str]
    day_column: str  # how the warehouse table selects a day: "data" (timestamp) or "dia" (date)
    order_by: str

    def key(self, prefix: str, fazenda: str, dia: date) -> str:
        return f"{self.prefix(prefix)}fazenda={fazenda}/dia={dia.isoformat()}/part-0.parquet"

    def prefix(self, prefix: str) -> str:
        return f"{prefix}{self.name}/"

    def partition_location(self, bucket: str, prefix: str, fazenda: str, dia: date) -> str:
        return f"s3://{bucket}/{self.prefix(prefix)}fazenda={fazenda}/dia={dia.isoformat()}/"


def _glue(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "string"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_int32(t):
        return "int"
    if pa.types.is_int64(t):
        return "bigint"
    if pa.types.is_timestamp(t):
        return "timestamp"
    raise TypeError(f"no Glue type for {t}")


def _table(
    name: str, source: str, fields: list[tuple[str, pa.DataType, str]], day: str, order: str
) -> CuratedTable:
    schema = pa.schema([pa.field(n, t) for n, t, _ in fields])
    return CuratedTable(
        name=name,
        source=source,
        schema=schema,
        glue_types={n: _glue(t) for n, t, _ in fields},
        comments={n: c for n, _, c in fields},
        day_column=day,
        order_by=order,
    )


HISTORICO = _table(
    "historico_consumo",
    "historico_consumo",
    [
        ("id_treated_data", pa.string(), "UUIDv5 of (cod_cliente, id_lote, id_curral, data)"),
        ("id_curral", pa.string(), "pen (digit string)"),
        ("id_raca", pa.string(), "breed (digit string)"),
        ("id_lote", pa.string(), "lot (digit string)"),
        ("peso_entrada", pa.float64(), "entry weight, kg"),
        ("peso_medio", pa.float64(), "average weight, kg"),
        ("quantidade_animais", pa.int32(), "animals in the lot"),
        ("dia_confinamento", pa.int32(), "days in confinement"),
        ("consumo_real", pa.float64(), "actual intake, kg per head per day"),
        ("consumo_meta", pa.float64(), "target intake, kg per head per day"),
        ("data", _TS, "date of the record (UTC)"),
        ("cod_cliente", pa.string(), "client code"),
        ("regra_consumo_meta", pa.string(), "rule that computed consumo_meta"),
        ("raw_object_key", pa.string(), "raw-zone object the row was loaded from"),
        ("row_ts", _TS, "first processing time (UTC)"),
        ("correlation_id", pa.string(), "trace id of the ingest"),
        ("row_fp", pa.int64(), "fingerprint of the raw line"),
    ],
    day="data",
    order="data, id_treated_data{collate_c}",
)

DIARIO = _table(
    "consumo_diario",
    "consumo_diario",
    [
        ("id_lote", pa.string(), "lot (digit string)"),
        ("id_curral", pa.string(), "pen (digit string)"),
        ("registros", pa.int32(), "records of the lot x pen that day"),
        ("quantidade_animais", pa.int32(), "animals fed"),
        ("consumo_real_cabeca", pa.float64(), "actual intake, kg per head"),
        ("consumo_meta_cabeca", pa.float64(), "target intake, kg per head"),
        ("desvio_pct", pa.float64(), "(real - meta) / meta x 100"),
        ("consumo_total_kg", pa.float64(), "kg fed: consumo_real x quantidade_animais"),
        ("peso_medio", pa.float64(), "average weight, kg (weighted by animals)"),
        ("dia_confinamento", pa.int32(), "days in confinement"),
        ("regra_consumo_meta", pa.string(), "rule that computed consumo_meta"),
        ("ultimo_processamento", _TS, "newest row_ts of the lot x pen that day (UTC)"),
    ],
    day="dia",
    order="id_lote, id_curral",
)

TABLES = {t.name: t for t in (HISTORICO, DIARIO)}
PARTITION_KEYS = (("fazenda", "string"), ("dia", "date"))
# Numeric columns of historico_consumo the describe summaries cover, plus desvio_pct per row.
DESCRIBE_COLUMNS = (
    "peso_entrada",
    "peso_medio",
    "quantidade_animais",
    "dia_confinamento",
    "consumo_real",
    "consumo_meta",
)


# --- reading a partition from the warehouse ---


def _where(table: CuratedTable, dialect: str, fazenda: str, dia: date) -> tuple[str, dict]:
    if table.day_column == "dia":
        return "fazenda = :f AND dia = :d", {"f": fazenda, "d": dia}
    d0, d1 = day_window(dia)
    return "fazenda = :f AND data >= :d0 AND data < :d1", {
        "f": fazenda,
        "d0": _ts(dialect, d0),
        "d1": _ts(dialect, d1),
    }


def _select_list(schema: pa.Schema, dialect: str) -> str:
    out = []
    for field in schema:
        if pa.types.is_timestamp(field.type) and dialect == "postgresql":
            # date_part is double precision (EXTRACT is numeric, slower); µs since the epoch
            # stay exact in a double until the year 2255.
            out.append(f"round(date_part('epoch', {field.name}) * 1000000)::bigint AS {field.name}")
        else:
            out.append(field.name)
    return ", ".join(out)


def iter_partition_batches(
    conn: sa.Connection,
    table: CuratedTable,
    fazenda: str,
    dia: date,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The partition's rows of ``table`` as record batches of its curated schema.

    PostgreSQL: one ``COPY (SELECT …) TO STDOUT`` in CSV (parameters bound by psycopg), spooled
    to a temporary file and parsed by Arrow's CSV reader. MySQL: a server-side cursor fetched in
    chunks. Either way memory holds a batch, not the partition.
    """
    schema = (
        table.schema if columns is None else pa.schema([table.schema.field(c) for c in columns])
    )
    dialect = _dialect(conn)
    where, params = _where(table, dialect, fazenda, dia)
    # Byte order for the uuid tie-break: locale-aware comparison costs far more and means nothing.
    order = table.order_by.format(collate_c=' COLLATE "C"' if dialect == "postgresql" else "")
    sql = (
        f"SELECT {_select_list(schema, dialect)} FROM {table.source} WHERE {where} ORDER BY {order}"
    )
    if dialect == "postgresql":
        yield from _pg_batches(conn, sql, params, schema)
    else:
        yield from _mysql_batches(conn, sql, params, schema)


def iter_built_diario_batches(
    conn: sa.Connection, fazenda: str, dia: date
) -> Iterator[pa.RecordBatch]:
    """PostgreSQL: build the partition's consumo_diario rows (the caller deleted the old ones)
    and read them back as they are inserted (``COPY (INSERT … RETURNING …)``)."""
    from feedlot_pipeline.analytics.summary import insert_returning_sql

    d0, d1 = day_window(dia)
    sql = insert_returning_sql(_select_list(DIARIO.schema, "postgresql"))
    yield from _pg_batches(conn, sql, {"f": fazenda, "d": dia, "d0": d0, "d1": d1}, DIARIO.schema)


def read_partition(
    conn: sa.Connection,
    table: CuratedTable,
    fazenda: str,
    dia: date,
    columns: list[str] | None = None,
) -> pa.Table:
    schema = (
        table.schema if columns is None else pa.schema([table.schema.field(c) for c in columns])
    )
    batches = list(iter_partition_batches(conn, table, fazenda, dia, columns))
    return pa.Table.from_batches(batches, schema=schema)


def _pg_batches(
    conn: sa.Connection, sql: str, params: dict, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    # psycopg binds the parameters client-side in COPY.
    statement = _pyformat(sql)
    raw_types = {f.name: (pa.int64() if pa.types.is_timestamp(f.type) else f.type) for f in schema}
    cursor = conn.connection.driver_connection.cursor()
    with tempfile.SpooledTemporaryFile(max_size=2 << 20) as spool:
        try:
            with cursor.copy(f"COPY ({statement.strip()}) TO STDOUT (FORMAT csv)", params) as copy:
                for chunk in copy:
                    spool.write(chunk)
        finally:
            cursor.close()
        if spool.tell() == 0:
            return
        spool.seek(0)
        reader = pacsv.open_csv(
            spool,
            read_options=pacsv.ReadOptions(column_names=schema.names, block_size=2 << 20),
            convert_options=pacsv.ConvertOptions(
                column_types=raw_types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        for batch in reader:
            yield _conform(batch, schema)


def _pyformat(sql: str) -> str:
    """``:name`` placeholders as the drivers' ``%(name)s`` (``::type`` casts left alone)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        if pa.types.is_timestamp(field.type) and not pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64()).view(pa.timestamp("us")).cast(field.type)
        elif column.type != field.type:
            column = column.cast(field.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _mysql_batches(
    conn: sa.Connection, sql: str, params: dict, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    import pymysql.cursors

    cursor = conn.connection.driver_connection.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(_pyformat(sql), params)
        while True:
            rows = cursor.fetchmany(_FETCH_ROWS)
            if not rows:
                break
            yield _rows_to_batch(rows, schema)
    finally:
        cursor.close()


def _rows_to_batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, type=pa.timestamp("us")).cast(field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --- writing Parquet ---


class ParquetBuffer:
    """Parquet written batch by batch into memory (row groups of ``ROW_GROUP_ROWS``)."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._sink = io.BytesIO()
        self._writer = pq.ParquetWriter(
            self._sink, schema, compression="zstd", write_statistics=True, use_dictionary=True
        )
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
            self.rows += batch.num_rows

    def finish(self) -> bytes:
        """The file; an empty partition still gets a valid file with the schema and 0 rows."""
        self._writer.close()
        return self._sink.getvalue()


def parquet_rows(data: bytes) -> int:
    """Rows a Parquet file says it holds (its footer)."""
    return pq.read_metadata(io.BytesIO(data)).num_rows


def glue_columns(table: CuratedTable) -> list[dict[str, Any]]:
    return [
        {"Name": n, "Type": table.glue_types[n], "Comment": table.comments[n]}
        for n in table.schema.names
    ]
