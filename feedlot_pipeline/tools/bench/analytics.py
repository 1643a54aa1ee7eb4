"""``feedlot bench-analytics``: the analytics of a farm-month against the naive pandas path.

Steps, all against one database server and a private moto server started for the benchmark:

1. put N rows of one farm over ``--days`` days into historico_consumo of a scratch database
   (generated here, loaded with the warehouse's own COPY path);
2. (a) the analytics path — ``partition.refresh_partitions`` over every day of the farm-month:
   consumo_diario rebuilt in the warehouse, describe CSV, both Parquet files, Glue partitions,
   notices — in a fresh child process, so its peak RSS is its own;
3. (b) the naive path, also in a fresh child: ``pandas.read_sql`` of the whole table,
   ``groupby`` for the summary, ``describe()`` and ``to_parquet`` per partition, the same objects
   written to the same bucket (and no summary written back to the warehouse: it does less);
4. (c) many small partitions: ``--small-partitions`` farm × day partitions of
   ``--small-rows`` rows each through ``refresh_partitions`` (one batch), partitions/s.

Prints seconds, rows/s and peak RSS of each path and the ratio against the targets (≥ 3× the
naive path, ≤ 400 MB). A benchmark, not a test: compare runs on one machine.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click

from feedlot_pipeline.core.memory import peak_rss_mb
from feedlot_pipeline.core.settings import Settings, scoped_environment

FARM = "fazenda_um"
CLIENT = "FazendaUm"
START = date(2024, 3, 1)
TARGET_SPEEDUP = 3.0
TARGET_RSS_MB = 400.0


# --- data ---


def _rows(farm: str, client: str, day: date, count: int, seed: int) -> list[tuple]:
    """``count`` rows of one farm and day: one per pen, ten pens per lot."""
    import random

    from feedlot_pipeline.core.records import treated_id

    rng = random.Random(seed)
    data = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)
    row_ts = data + timedelta(hours=20)
    rule = "peso_medio_pct_1_76"
    offset = (day - START).days
    out = []
    for pen in range(count):
        curral = f"{25994051000000 + pen}"
        lote = f"{(pen // 10) + 1}"
        entrada = 230.0 + (pen % 50)
        animals = 20 + pen % 70
        conf = 10 + (pen % 90) + offset
        medio = entrada + 1.2 * conf
        meta = medio * 0.0176
        real = meta * rng.uniform(0.7, 1.35)
        out.append(
            (
                treated_id(client, lote, curral, data),
                curral,
                "28551700000020",
                lote,
                entrada,
                medio,
                animals,
                conf,
                round(real, 6),
                meta,
                data,
                client,
                farm,
                rule,
                f"historico_diario/{farm}/{day:%Y/%m/%d}/bench-{seed}.jsonl",
                row_ts,
                f"bench-{day.isoformat()}",
                pen,  # row_fp
                row_ts,  # landed_at
                pen,  # raw_line_no
            )
        )
    return out


def fill(url: str, farms: list[tuple[str, str]], days: int, per_day: int, echo=click.echo) -> int:
    """Load ``per_day`` rows per farm and day into historico_consumo; rows written."""
    from feedlot_pipeline.warehouse.store import Warehouse

    started = time.perf_counter()
    total = 0
    with Warehouse(url) as wh:
        for i, (farm, client) in enumerate(farms):
            for d in range(days):
                rows = _rows(farm, client, START + timedelta(days=d), per_day, seed=i * 1000 + d)
                counts = wh.upsert_consumo(rows, assume_new=True)
                total += sum(c.inserted for c in counts.values())
        if wh.dialect == "postgresql":
            from sqlalchemy import text

            with wh.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE historico_consumo"))
    echo(f"  {total:,} rows in {time.perf_counter() - started:.1f} s")
    return total


# --- the two paths (each in its own process) ----------------------------------------------------


def _child_analytics(url: str, partitions: list[tuple[str, str]], chunk: int) -> dict[str, Any]:
    from feedlot_pipeline.analytics.partition import refresh_partitions
    from feedlot_pipeline.analytics.targets import AnalyticsTargets
    from feedlot_pipeline.warehouse.store import Warehouse

    targets = AnalyticsTargets.from_settings()
    parts = [(f, date.fromisoformat(d)) for f, d in partitions]
    with Warehouse(url) as wh:
        wh.clients()  # connected before the clock, as a running Dagster process would be
        started = time.perf_counter()
        results = refresh_partitions(wh, targets, parts, chunk_partitions=chunk)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": sum(r.counts.rows for r in results),
        "lots": sum(r.counts.lots for r in results),
        "partitions": len(results),
        "passed": all(r.passed for r in results),
        "max_rss_mb": peak_rss_mb(),
    }


def _child_naive(url: str, write_summary: bool = False) -> dict[str, Any]:
    """pandas.read_sql of the whole table, groupby, describe, to_parquet (the naive way)."""
    import io

    import pandas as pd
    import sqlalchemy as sa

    from feedlot_pipeline.analytics.targets import AnalyticsTargets, put_object
    from feedlot_pipeline.warehouse.store import create_warehouse_engine

    targets = AnalyticsTargets.from_settings()
    engine = create_warehouse_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
        started = time.perf_counter()
        df = pd.read_sql(sa.text("SELECT * FROM historico_consumo"), conn)
    read_seconds = time.perf_counter() - started
    df["dia"] = pd.to_datetime(df["data"], utc=True).dt.date
    df["kg"] = df["consumo_real"] * df["quantidade_animais"]
    df["meta_kg"] = df["consumo_meta"] * df["quantidade_animais"]
    df["peso_kg"] = df["peso_medio"] * df["quantidade_animais"]
    df["desvio_pct"] = 100 * (df["consumo_real"] - df["consumo_meta"]) / df["consumo_meta"]
    summary = (
        df.groupby(["fazenda", "dia", "id_lote", "id_curral"])
        .agg(
            registros=("id_treated_data", "size"),
            quantidade_animais=("quantidade_animais", "sum"),
            consumo_total_kg=("kg", "sum"),
            meta_kg=("meta_kg", "sum"),
            peso_kg=("peso_kg", "sum"),
            dia_confinamento=("dia_confinamento", "max"),
            regra_consumo_meta=("regra_consumo_meta", "max"),
        )
        .reset_index()
    )
    n = summary["quantidade_animais"]
    summary["consumo_real_cabeca"] = summary["consumo_total_kg"] / n
    summary["consumo_meta_cabeca"] = summary["meta_kg"] / n
    summary["desvio_pct"] = (
        100 * (summary["consumo_total_kg"] - summary["meta_kg"]) / summary["meta_kg"]
    )
    summary["peso_medio"] = summary["peso_kg"] / n
    numeric = [
        "peso_entrada",
        "peso_medio",
        "quantidade_animais",
        "dia_confinamento",
        "consumo_real",
        "consumo_meta",
        "desvio_pct",
    ]
    prefix = "bench-naive/"
    for (fazenda, dia), part in df.groupby(["fazenda", "dia"]):
        csv = part[numeric].describe().to_csv().encode()
        put_object(targets, f"{prefix}describe/{fazenda}/{dia}/describe.csv", csv, "text/csv")
        for name, frame in (
            (
                "historico_consumo",
                part.drop(columns=["fazenda", "dia", "kg", "meta_kg", "peso_kg"]),
            ),
            (
                "consumo_diario",
                summary[(summary["fazenda"] == fazenda) & (summary["dia"] == dia)].drop(
                    columns=["fazenda", "dia"]
                ),
            ),
        ):
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            put_object(
                targets,
                f"{prefix}{name}/fazenda={fazenda}/dia={dia}/part-0.parquet",
                buffer.getvalue(),
                "application/vnd.apache.parquet",
            )
    seconds = time.perf_counter() - started
    to_sql_seconds = None
    if write_summary:  # the same outputs as (a): the summary in the warehouse too
        columns = [c for c in summary.columns if c not in ("meta_kg", "peso_kg")]
        begun = time.perf_counter()
        summary[columns].to_sql("bench_naive_consumo_diario", engine, index=False, chunksize=50_000)
        to_sql_seconds = time.perf_counter() - begun
    engine.dispose()
    return {
        "seconds": seconds,
        "to_sql_seconds": to_sql_seconds,
        "read_seconds": read_seconds,
        "rows": len(df),
        "lots": len(summary),
        "max_rss_mb": peak_rss_mb(),
    }


def _in_child(fn, *args) -> dict[str, Any]:  # noqa: ANN001
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# --- the command ---------------------------------------------------------------------------------


def _private_aws(stack: ExitStack, work: Path) -> dict[str, str]:
    """A moto server of our own and the variables that point boto3 (and the children) at it."""
    from feedlot_pipeline.local.services import free_port, start_moto, wait_for_port

    port = free_port()
    proc = start_moto(port, work / "moto.log")
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    wait_for_port(port, 30, proc, "moto")
    tag = uuid.uuid4().hex[:6]
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FEEDLOT_PROCESSED_BUCKET": f"bench-processed-{tag}",
        "FEEDLOT_GLUE_DATABASE": f"bench_{tag}",
        "FEEDLOT_PROCESSED_EVENTS_TOPIC": f"bench-events-{tag}",
    }


@click.command()
@click.option("--records", default=1_000_000, show_default=True, help="Rows of the farm-month.")
@click.option("--days", default=30, show_default=True, help="Days the rows spread over.")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="A database server URL; a scratch database is created on it and dropped afterwards. "
    "Default: FEEDLOT_WAREHOUSE_URL's server, else an embedded PostgreSQL.",
)
@click.option(
    "--small-partitions",
    default=1000,
    show_default=True,
    help="Partitions of the many-small-partitions run (0 to skip).",
)
@click.option("--small-rows", default=20, show_default=True, help="Rows per small partition.")
@click.option("--skip-naive", is_flag=True, help="Run only the analytics path.")
@click.option(
    "--naive-writes-summary",
    is_flag=True,
    help="Also time the naive path writing its summary to the warehouse (DataFrame.to_sql), "
    "the output (b) leaves out and (a) includes.",
)
def bench_analytics(
    records: int,
    days: int,
    url: str | None,
    small_partitions: int,
    small_rows: int,
    skip_naive: bool,
    naive_writes_summary: bool,
) -> None:
    """Benchmark the analytics of a farm-month against the naive pandas path."""
    from feedlot_pipeline.core.aws import client
    from feedlot_pipeline.tools.bench.load import scratch_database, server_or_embedded
    from feedlot_pipeline.tools.db import shown

    url = url or Settings().warehouse_url_value()
    per_day = max(1, records // days)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="feedlot-bench-analytics-"))
        stack.callback(lambda: shutil.rmtree(work, ignore_errors=True))
        env = _private_aws(stack, work)
        stack.enter_context(scoped_environment(env))
        client("s3").create_bucket(Bucket=env["FEEDLOT_PROCESSED_BUCKET"])
        db_url = scratch_database(stack, server_or_embedded(stack, url, work))
        click.echo(f"scratch database {shown(db_url)}; moto {env['AWS_ENDPOINT_URL']}")
        click.echo(f"loading {per_day * days:,} rows: {FARM}, {days} days × {per_day:,} …")
        rows = fill(db_url, [(FARM, CLIENT)], days, per_day)
        partitions = [(FARM, (START + timedelta(days=d)).isoformat()) for d in range(days)]

        click.echo("(a) analytics path …")
        fast = _in_child(_child_analytics, db_url, partitions, 200)
        naive = None
        if not skip_naive:
            click.echo("(b) naive path …")
            naive = _in_child(_child_naive, db_url, naive_writes_summary)
        small = None
        if small_partitions:
            farms = max(1, small_partitions // 100)
            per_farm = -(-small_partitions // farms)
            click.echo(
                f"(c) {farms * per_farm:,} small partitions ({farms} farms × {per_farm} days × "
                f"{small_rows} rows) …"
            )
            names = [(f"bench_f{i:02d}", f"BenchF{i:02d}") for i in range(farms)]
            small_rows_total = fill(db_url, names, per_farm, small_rows)
            parts = [
                (farm, (START + timedelta(days=d)).isoformat())
                for farm, _ in names
                for d in range(per_farm)
            ]
            small = _in_child(_child_analytics, db_url, parts, 200)
            small["rows_loaded"] = small_rows_total
    _print(rows, fast, naive, small)


def _print(rows: int, fast: dict, naive: dict | None, small: dict | None) -> None:
    click.echo(f"\nrows {rows:,} (one farm-month), {fast['partitions']} partitions\n")
    click.echo(f"{'path':<34}{'seconds':>9}{'rows/s':>12}{'peak RSS':>11}")
    click.echo(
        f"{'(a) analytics (SQL summary, Arrow)':<34}{fast['seconds']:>9.2f}"
        f"{fast['rows'] / fast['seconds']:>12,.0f}{fast['max_rss_mb']:>8,.0f} MB"
    )
    if naive is not None:
        click.echo(
            f"{'(b) naive (read_sql, pandas)':<34}{naive['seconds']:>9.2f}"
            f"{naive['rows'] / naive['seconds']:>12,.0f}{naive['max_rss_mb']:>8,.0f} MB"
            f"   (read_sql alone {naive['read_seconds']:.2f} s)"
        )
    if naive is not None and naive.get("to_sql_seconds") is not None:
        total = naive["seconds"] + naive["to_sql_seconds"]
        click.echo(
            f"{'(b+) naive + summary to_sql':<34}{total:>9.2f}"
            f"{naive['rows'] / total:>12,.0f}{'':>11}   (to_sql {naive['to_sql_seconds']:.2f} s)"
        )
    if small is not None:
        click.echo(
            f"{'(c) small partitions':<34}{small['seconds']:>9.2f}"
            f"{small['rows'] / small['seconds']:>12,.0f}{small['max_rss_mb']:>8,.0f} MB"
            f"   {small['partitions']:,} partitions, "
            f"{small['partitions'] / small['seconds']:,.0f} partitions/s"
        )
    click.echo("")
    click.echo(f"summary rows (a) {fast['lots']:,}; checks passed: {fast['passed']}")
    if naive is not None:
        speedup = naive["seconds"] / fast["seconds"]
        ok = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
        click.echo(f"speedup (b)/(a) = {speedup:.2f}x   ({ok} the ≥ {TARGET_SPEEDUP:g}x target)")
        if naive.get("to_sql_seconds") is not None:
            same = (naive["seconds"] + naive["to_sql_seconds"]) / fast["seconds"]
            click.echo(f"speedup (b+)/(a) = {same:.2f}x   (the same outputs on both sides)")
    ok = "meets" if fast["max_rss_mb"] <= TARGET_RSS_MB else "MISSES"
    click.echo(
        f"peak RSS (a) = {fast['max_rss_mb']:.0f} MB   ({ok} the ≤ {TARGET_RSS_MB:g} MB target)"
    )
