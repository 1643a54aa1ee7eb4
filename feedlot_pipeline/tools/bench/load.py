"""``feedlot bench``: the warehouse load path against a raw COPY of the same rows (a benchmark).

Steps, all on the same database server:

1. generate N synthetic records as JSON Lines into a temporary file (streamed);
2. create a scratch database on the server of --url / FEEDLOT_WAREHOUSE_URL (or start an embedded
   PostgreSQL when neither is set) and migrate it;
3. (a) load the file through the real load path (``load_file``: parse, validate, enrich,
   idempotent upsert), in a fresh child process so its peak RSS is its own;
4. (b) COPY the same rows, already parsed and cleaned before the clock starts (chunk by chunk, so
   memory stays bounded), into scratch tables with the same columns: one with no index, one with
   the same primary key and indexes as historico_consumo (on MySQL: batched plain INSERTs);
5. (c) reload the same file through the load path: it must insert and update nothing;
6. (d) on the server alone, ``INSERT … SELECT`` the plain scratch rows into a table with the
   primary key and indexes, and into one with the primary key only: what the key costs the
   server, the ceiling of any load path.

Exits 1 when the reload wrote rows. Figures depend on the machine: compare runs on one machine.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click

from feedlot_pipeline.core.memory import peak_rss_mb
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.warehouse.loader import DEFAULT_CHUNK_ROWS

OBJECT_KEY = "bench/records.jsonl"


def _child_load(url: str, path: str, chunk_rows: int) -> dict[str, Any]:
    """Run the load path in this (fresh) process; return the report and this process's peak RSS."""
    from feedlot_pipeline.warehouse.loader import load_file
    from feedlot_pipeline.warehouse.store import Warehouse

    warehouse = Warehouse(url)
    try:
        warehouse.clients()  # connect before the clock, as a long-running worker would be
        report = load_file(warehouse, path, object_key=OBJECT_KEY, chunk_rows=chunk_rows)
    finally:
        warehouse.dispose()
    return {**asdict(report), "max_rss_mb": peak_rss_mb()}


def _in_child(url: str, path: Path, chunk_rows: int) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_child_load, url, str(path), chunk_rows).result()


# --- scratch database ---------------------------------------------------------------------------


def _create_database(server_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from feedlot_pipeline.warehouse.store import normalize_url

    parsed = normalize_url(server_url)
    name = f"feedlot_bench_{uuid.uuid4().hex[:10]}"
    if parsed.get_backend_name() == "postgresql":
        from feedlot_pipeline.local.services import ensure_database

        return ensure_database(parsed.render_as_string(hide_password=False), name)
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        admin.dispose()
    return make_url(parsed).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() == "postgresql":
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
        statement = f"DROP DATABASE IF EXISTS `{name}`"
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def generate_file(path: Path, records: int, seed: int, bad_fraction: float) -> None:
    """Write the benchmark's synthetic JSON Lines input; say its size and how long it took."""
    from feedlot_pipeline.tools.synthetic import write_jsonl

    started = time.perf_counter()
    write_jsonl(path, records, seed, bad_fraction=bad_fraction)
    size_mb = path.stat().st_size / 2**20
    click.echo(
        f"generated {records:,} records ({size_mb:,.0f} MiB) in "
        f"{time.perf_counter() - started:.1f} s"
    )


def server_or_embedded(stack: ExitStack, url: str | None, work: Path, echo=click.echo) -> str:
    """``url`` when given; else an embedded PostgreSQL under ``work``, stopped with ``stack``."""
    if url:
        return url
    from feedlot_pipeline.local.services import EmbeddedPostgres, free_port

    server = EmbeddedPostgres(work / "pg" / "data", free_port())
    echo("starting an embedded PostgreSQL …")
    server.start()
    stack.callback(server.stop)
    return server.url


def scratch_database(stack: ExitStack, server_url: str) -> str:
    """A new migrated database on ``server_url``, dropped when ``stack`` closes."""
    from feedlot_pipeline.warehouse import schema

    db_url = _create_database(server_url)
    stack.callback(_drop_database, db_url)
    schema.upgrade(db_url)
    return db_url


# --- the COPY baseline --------------------------------------------------------------------------


def _parsed_chunks(path: Path, clients: dict[str, str], chunk_rows: int):
    """Rows of the file exactly as the load path makes them (valid, first occurrence only)."""
    from feedlot_pipeline.core.records import (
        RecordError,
        clean,
        get_rule,
        loads_line,
    )
    from feedlot_pipeline.core.records import (
        row_fingerprint as fp,
    )
    from feedlot_pipeline.warehouse.loader import iter_file_lines

    rule = get_rule(Settings().consumo_meta_rule)
    row_ts = datetime.now(timezone.utc)
    seen: set[int] = set()
    chunk: list[tuple] = []
    for line in iter_file_lines(path):
        try:
            row = clean(loads_line(line), clients, rule, OBJECT_KEY, row_ts, None, fp(line))
        except RecordError:
            continue
        key = hash(row[0])
        if key in seen:
            continue
        seen.add(key)
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _copy_baseline(url: str, path: Path, chunk_rows: int) -> dict[str, float]:
    """Seconds to COPY (PostgreSQL) or INSERT (MySQL) the parsed rows, per scratch table."""
    from sqlalchemy import text

    from feedlot_pipeline.core.records import WAREHOUSE_COLUMNS
    from feedlot_pipeline.warehouse.mysql import naive_utc
    from feedlot_pipeline.warehouse.postgres import COPY_TYPES
    from feedlot_pipeline.warehouse.store import Warehouse

    warehouse = Warehouse(url)
    tables = {"plain": "bench_copy_plain", "indexed": "bench_copy_indexed"}
    columns = ", ".join(WAREHOUSE_COLUMNS)
    try:
        clients = warehouse.clients()
        with warehouse.engine.begin() as conn:
            if warehouse.dialect == "postgresql":
                conn.execute(text(f"CREATE TABLE {tables['plain']} (LIKE historico_consumo)"))
                conn.execute(
                    text(f"CREATE TABLE {tables['indexed']} (LIKE historico_consumo INCLUDING ALL)")
                )
            else:
                conn.execute(text(f"CREATE TABLE {tables['indexed']} LIKE historico_consumo"))
                conn.execute(text(f"CREATE TABLE {tables['plain']} LIKE historico_consumo"))
                conn.execute(
                    text(
                        f"ALTER TABLE {tables['plain']} DROP PRIMARY KEY, "
                        "DROP INDEX ix_historico_consumo_fazenda_data"
                    )
                )
        seconds = dict.fromkeys(tables, 0.0)
        rows = 0
        for chunk in _parsed_chunks(path, clients, chunk_rows):
            rows += len(chunk)
            pg = warehouse.dialect == "postgresql"
            prepared = chunk if pg else [naive_utc(r) for r in chunk]
            for label, table in tables.items():
                started = time.perf_counter()
                with warehouse.engine.begin() as conn:
                    driver = conn.connection.driver_connection
                    with driver.cursor() as cur:
                        if warehouse.dialect == "postgresql":
                            sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
                            with cur.copy(sql) as copy:
                                copy.set_types(COPY_TYPES)
                                for row in prepared:
                                    copy.write_row(row)
                        else:
                            marks = ", ".join(["%s"] * len(WAREHOUSE_COLUMNS))
                            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
                            cur.executemany(sql, prepared)
                seconds[label] += time.perf_counter() - started
        seconds["server_indexed"] = _server_only_insert(warehouse, tables["plain"], True)
        seconds["server_pk"] = _server_only_insert(warehouse, tables["plain"], False)
        return {**seconds, "rows": rows, "dialect": warehouse.dialect}
    finally:
        warehouse.dispose()


def _server_only_insert(warehouse: Any, plain_table: str, indexes: bool) -> float:
    """Seconds the server alone takes to put the rows into a table with the PK (and indexes).

    ``INSERT … SELECT`` from the plain scratch table: no client, no parsing, no network. It is
    the floor of any load path that keeps historico_consumo's primary key (and its index).
    """
    from sqlalchemy import text

    table = "bench_server_indexed" if indexes else "bench_server_pk"
    with warehouse.engine.begin() as conn:
        if warehouse.dialect == "postgresql":
            including = "ALL" if indexes else "DEFAULTS INCLUDING CONSTRAINTS"
            conn.execute(
                text(f"CREATE TABLE {table} (LIKE historico_consumo INCLUDING {including})")
            )
            if not indexes:
                conn.execute(text(f"ALTER TABLE {table} ADD PRIMARY KEY (id_treated_data)"))
        else:
            conn.execute(text(f"CREATE TABLE {table} LIKE historico_consumo"))
            if not indexes:
                conn.execute(
                    text(f"ALTER TABLE {table} DROP INDEX ix_historico_consumo_fazenda_data")
                )
    started = time.perf_counter()
    with warehouse.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} SELECT * FROM {plain_table}"))
    return time.perf_counter() - started


# --- the command --------------------------------------------------------------------------------


@click.command()
@click.option("--records", default=1_000_000, show_default=True, help="Records to generate.")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="A database server URL (postgresql+psycopg://… or mysql+pymysql://…); a scratch "
    "database is created on it and dropped afterwards. Default: FEEDLOT_WAREHOUSE_URL's server, "
    "else an embedded PostgreSQL.",
)
@click.option("--keep-file", is_flag=True, help="Keep the generated JSON Lines file.")
@click.option("--seed", default=7, show_default=True)
@click.option("--bad-fraction", default=0.0, show_default=True, help="Share of broken records.")
@click.option("--chunk-rows", default=DEFAULT_CHUNK_ROWS, show_default=True)
def bench(
    records: int,
    url: str | None,
    keep_file: bool,
    seed: int,
    bad_fraction: float,
    chunk_rows: int,
) -> None:
    """Benchmark the warehouse load path against raw COPY of the same rows."""
    from feedlot_pipeline.tools.db import shown

    url = url or Settings().warehouse_url_value()
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="feedlot-bench-"))
        path = work / "records.jsonl"
        if keep_file:
            click.echo(f"file kept: {path}")
            stack.callback(lambda: shutil.rmtree(work / "pg", ignore_errors=True))
        else:
            stack.callback(lambda: shutil.rmtree(work, ignore_errors=True))

        generate_file(path, records, seed, bad_fraction)

        db_url = scratch_database(stack, server_or_embedded(stack, url, work))
        click.echo(f"scratch database {shown(db_url)}\n")

        first = _in_child(db_url, path, chunk_rows)
        baseline = _copy_baseline(db_url, path, chunk_rows)
        reload = _in_child(db_url, path, chunk_rows)

    _print(records, first, baseline, reload)
    if reload["inserted"] or reload["updated"]:
        raise click.ClickException(
            f"reload wrote rows: {reload['inserted']} inserted, {reload['updated']} updated"
        )


def _print(records: int, first: dict, baseline: dict, reload: dict) -> None:
    """The figures: rows/s of each step, the ratios, the reload check and peak RSS."""
    how = "COPY" if baseline["dialect"] == "postgresql" else "INSERT"  # MySQL has no COPY
    valid = baseline["rows"]
    load_rate = first["landed"] / first["seconds"]
    plain_rate = valid / baseline["plain"]
    indexed_rate = valid / baseline["indexed"]
    server_rate = valid / baseline["server_indexed"]
    pk_rate = valid / baseline["server_pk"]
    rows = [
        ("(a) load path, first load", first["seconds"], load_rate, first),
        (f"(b) {how}, plain scratch", baseline["plain"], plain_rate, None),
        (f"    {how}, indexed scratch", baseline["indexed"], indexed_rate, None),
        ("(c) load path, reload", reload["seconds"], reload["landed"] / reload["seconds"], reload),
        ("(d) server only, indexed", baseline["server_indexed"], server_rate, None),
        ("    server only, PK only", baseline["server_pk"], pk_rate, None),
    ]
    click.echo(
        f"records {records:,}: {first['loaded']:,} valid, {first['rejected']:,} rejected "
        "(load path rates count every line; COPY/INSERT rates the valid rows)"
    )
    for label, seconds, rate, report in rows:
        line = f"{label:<32}{seconds:8.2f} s {rate:>10,.0f} rows/s"
        if report is not None:
            line += (
                f"   inserted {report['inserted']:,}, updated {report['updated']:,}, "
                f"unchanged {report['unchanged']:,}; peak RSS {report['max_rss_mb']:,.0f} MB"
            )
            if report["matched"]:
                line += f"; {report['matched']:,} found stored as-is, not cleaned"
        elif label.endswith("plain scratch"):
            line += "   same columns, no index"
        elif label.startswith("(d)"):
            line += "   INSERT … SELECT from (b) into a copy with the PK and indexes: no client"
        elif label.endswith("PK only"):
            line += "   the same into a copy with the primary key alone"
        else:
            line += "   same columns, primary key and indexes"
        click.echo(line)
    click.echo(
        f"\nload / {how} plain   = {load_rate / plain_rate:.2f}\n"
        f"load / {how} indexed = {load_rate / indexed_rate:.2f}\n"
        f"server only / {how} plain = {server_rate / plain_rate:.2f}   (the ceiling of any "
        "load path that keeps the primary key and index)\n"
        f"server only, PK only / {how} plain = {pk_rate / plain_rate:.2f}   (with the key alone)\n"
        f"reload time / first load time = {reload['seconds'] / first['seconds']:.2f}\n"
        f"rows inserted on reload = {reload['inserted']}"
    )
