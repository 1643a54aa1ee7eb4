"""The analytics of farm × day partitions as plain functions: no Dagster context needed.

``refresh_partitions`` is what a batch run calls after loading historico_consumo (and after the
partitions' blocking checks passed): for every partition it

1. rebuilds ``consumo_diario`` (one INSERT … SELECT for a chunk of partitions, in the warehouse);
2. streams the partition's historico_consumo and consumo_diario rows into Parquet
   (``curated/<table>/fazenda=<f>/dia=<d>/part-0.parquet``) and the describe CSV
   (``describe/historico_consumo/<f>/<yyyy>/<mm>/<dd>/describe.csv``), uploading on a few threads
   while the next partition is read;
3. registers the partitions in the Glue Data Catalog (100 per call);
4. commits the chunk's warehouse transaction — only now, so a failure of S3 or Glue leaves
   consumo_diario as it was (the run fails with ``AnalyticsOutputError``; the next run redoes it);
5. publishes one ``PartitionLoadedNotice`` per partition (10 per call).

It returns a ``PartitionAnalytics`` per partition: counts, output URIs, the materialization
metadata of each analytics asset and the evaluations of their checks, as plain data;
``analytics.events.partition_events`` turns one into Dagster events for ``context.log_event``.

The names, metadata and check outcomes it reports are those of ``outcomes``; the Dagster UI path
(one asset, one partition) is ``per_asset``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from feedlot_pipeline.analytics import catalog, describe, summary
from feedlot_pipeline.analytics.curated import (
    DIARIO,
    HISTORICO,
    CuratedTable,
    ParquetBuffer,
    iter_built_diario_batches,
    iter_partition_batches,
    parquet_rows,
)
from feedlot_pipeline.analytics.notices import publish_notices
from feedlot_pipeline.analytics.outcomes import (
    ANOMALIES_LISTED,
    CONSUMO_DIARIO,
    CURATED_ASSETS,
    CURATED_DIARIO,
    CURATED_HISTORICO,
    DESCRIBE_CONSUMO,
    PartitionAnalytics,
    anomaly_outcome,
    reconcile_outcome,
    row_count_outcome,
    summary_metadata,
)
from feedlot_pipeline.analytics.summary import Partition, PartitionCounts
from feedlot_pipeline.analytics.targets import (
    AnalyticsTargets,
    put_object,
)
from feedlot_pipeline.core.contracts import PartitionLoadedNotice
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.warehouse.store import Warehouse

log = logging.getLogger("feedlot.analytics")

MAX_CORRELATION_IDS = 100
CHUNK_PARTITIONS = 200


@dataclass
class _Written:
    """One partition's outputs while they are uploaded."""

    fazenda: str
    dia: date
    parquet_rows: dict[str, int] = field(default_factory=dict)
    parquet_bytes: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    describe_records: list[dict[str, Any]] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)
    correlation_ids: list[str] = field(default_factory=list)
    correlation_ids_truncated: bool = False
    # What the rows read back from the warehouse say (the batch path's check inputs).
    rows: int = 0
    pair_chunks: list[Any] = field(default_factory=list)  # (id_lote, id_curral) tables
    lots_expected: int = 0
    total_kg_historico: float = 0.0
    lots: int = 0
    total_kg: float = 0.0


# --- the batch entry ---


def refresh_partition(
    warehouse: Warehouse,
    targets: AnalyticsTargets,
    fazenda: str,
    dia: date,
    *,
    notify: bool = True,
    run_id: str | None = None,
) -> PartitionAnalytics:
    """``refresh_partitions`` for one partition."""
    (result,) = refresh_partitions(
        warehouse, targets, [(fazenda, dia)], notify=notify, run_id=run_id
    )
    return result


def refresh_partitions(
    warehouse: Warehouse,
    targets: AnalyticsTargets,
    partitions: Sequence[Partition],
    *,
    notify: bool = True,
    run_id: str | None = None,
    settings: AnalyticsSettings | None = None,
    chunk_partitions: int = CHUNK_PARTITIONS,
    on_partition: Callable[[PartitionAnalytics], None] | None = None,
) -> list[PartitionAnalytics]:
    """Summary, describe CSV, both Parquet files, Glue partitions and the notice of every
    partition (in the order given, duplicates once). Call it only with partitions whose
    historico_consumo blocking checks passed.

    Raises ``AnalyticsOutputError`` when S3, Glue or SNS fails; the chunk being written is rolled
    back (earlier chunks stay committed) and a rerun completes the rest.
    """
    settings = settings or AnalyticsSettings()
    unique = list(dict.fromkeys((f, d) for f, d in partitions))
    if not unique:
        return []
    _return_memory_promptly()
    catalog.ensure_catalog(targets)
    workers = settings.analytics_db_workers
    # Chunks small enough that every database worker gets some, at most ``chunk_partitions``.
    size = max(1, min(chunk_partitions, -(-len(unique) // (2 * workers))))
    chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
    results: list[PartitionAnalytics] = []
    with (
        ThreadPoolExecutor(settings.analytics_workers, "feedlot-analytics-put") as uploads,
        ThreadPoolExecutor(workers, "feedlot-analytics-db") as db,
    ):
        # Each chunk in its own transaction on its own connection; while one waits on the
        # server (rebuild, COPY), another formats Parquet. Results are taken in order.
        futures = [
            db.submit(_refresh_chunk, warehouse, targets, chunk, settings, uploads, run_id)
            for chunk in chunks
        ]
        try:
            for future in futures:
                done = future.result()
                if notify:
                    ids = publish_notices(targets, [n for _, n in done])
                    done = [
                        (replace(r, notice_id=i), n) for (r, n), i in zip(done, ids, strict=True)
                    ]
                for result, _ in done:
                    results.append(result)
                    if on_partition is not None:
                        on_partition(result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


_MEMORY_SET = False
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024


def _return_memory_promptly() -> None:
    """Hand freed buffers back to the OS at once, so the peak RSS follows what is in use.

    Arrow's default allocator keeps freed memory for reuse: jemalloc with no decay delay returns
    it. glibc raises its mmap threshold each time a large buffer is freed (up to 32 MB), after
    which every partition's CSV spool and Parquet bytes come from the heap and stay there: a fixed
    128 KiB threshold keeps them in their own mappings (measured on the 1M-row bench: peak RSS
    −35 MB, no measurable time). Process-wide, set once; skipped where glibc is not the C library.
    """
    global _MEMORY_SET
    if _MEMORY_SET:
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pass  # a build without jemalloc: keep the default pool
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): its own defaults
    _MEMORY_SET = True


def _refresh_chunk(
    warehouse: Warehouse,
    targets: AnalyticsTargets,
    chunk: list[Partition],
    settings: AnalyticsSettings,
    pool: ThreadPoolExecutor,
    run_id: str | None,
) -> list[tuple[PartitionAnalytics, PartitionLoadedNotice]]:
    threshold = settings.anomaly_threshold_pct
    with summary.connect(warehouse) as conn, conn.begin():
        # PostgreSQL builds each partition's rows while streaming them back (COPY (INSERT …
        # RETURNING)); MySQL builds the chunk with one INSERT … SELECT and reads them back.
        built_while_read = warehouse.dialect == "postgresql"
        if built_while_read:
            summary.delete(conn, chunk)
        else:
            summary.rebuild(conn, chunk)
        pending: list[Future] = []
        written: list[_Written] = []
        for fazenda, dia in chunk:
            w = _Written(fazenda, dia)
            written.append(w)
            pending.extend(_write_partition(conn, targets, w, pool, built_while_read))
            _drain(pending, keep=settings.analytics_workers)
        rejected = summary.rejected_counts(conn, chunk)
        anomaly_counts = summary.count_anomalies(conn, chunk, threshold)
        listed = {
            p: summary.anomalies(conn, p[0], p[1], threshold, ANOMALIES_LISTED)
            for p, n in anomaly_counts.items()
            if n
        }
        _drain(pending, keep=0)
        for table in (HISTORICO, DIARIO):
            catalog.register_partitions(targets, table, chunk)
        # The with-block commits here: the files and the catalog are in place.
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    out = []
    for w in written:
        key = (w.fazenda, w.dia)
        c = PartitionCounts(
            rows=w.rows,
            lots_expected=w.lots_expected,
            lots=w.lots,
            total_kg_historico=w.total_kg_historico,
            total_kg=w.total_kg,
            rejected=rejected.get(key, 0),
        )
        result = _result(w, c, anomaly_counts[key], listed.get(key, []), threshold, targets)
        notice = PartitionLoadedNotice(
            fazenda=w.fazenda,
            dia=w.dia.isoformat(),
            rows=c.rows,
            lots=c.lots,
            rejected=c.rejected,
            total_kg=round(max(c.total_kg, 0.0), 6),
            correlation_ids=w.correlation_ids,
            correlation_ids_truncated=w.correlation_ids_truncated,
            outputs=dict(w.outputs),
            refreshed_at=now,
            run_id=run_id,
        )
        out.append((result, notice))
    return out


def _drain(pending: list[Future], keep: int) -> None:
    """Wait for the oldest uploads until at most ``keep`` are in flight; re-raise a failure."""
    while len(pending) > keep:
        pending.pop(0).result()


def _write_partition(
    conn: sa.Connection,
    targets: AnalyticsTargets,
    w: _Written,
    pool: ThreadPoolExecutor,
    build_diario: bool = False,
) -> list[Future]:
    """Read the partition (both tables), build its files, submit their uploads."""
    futures = []
    buffer = ParquetBuffer(HISTORICO.schema)
    numeric = describe.NumericColumns()
    correlation: set[str] = set()
    for batch in iter_partition_batches(conn, HISTORICO, w.fazenda, w.dia):
        buffer.write(batch)
        numeric.add(batch)
        _count_historico(w, batch)
        if len(correlation) <= MAX_CORRELATION_IDS:
            ids = pc.unique(batch.column("correlation_id")).drop_null().to_pylist()
            correlation.update(ids)
    futures.append(_submit_parquet(pool, targets, HISTORICO, w, buffer))
    w.lots_expected = _distinct_pairs(w)
    w.pair_chunks.clear()
    ids = sorted(correlation)
    w.correlation_ids = ids[:MAX_CORRELATION_IDS]
    w.correlation_ids_truncated = len(ids) > MAX_CORRELATION_IDS

    stats = numeric.describe()
    w.describe_records = describe.summary_records(stats)
    w.headline = describe.headline(stats)
    key = targets.describe_key(w.fazenda, w.dia)
    w.outputs[DESCRIBE_CONSUMO] = targets.uri(key)
    futures.append(pool.submit(put_object, targets, key, describe.to_csv(stats), "text/csv"))

    buffer = ParquetBuffer(DIARIO.schema)
    batches = (
        iter_built_diario_batches(conn, w.fazenda, w.dia)
        if build_diario
        else iter_partition_batches(conn, DIARIO, w.fazenda, w.dia)
    )
    for batch in batches:
        buffer.write(batch)
        w.lots += batch.num_rows
        w.total_kg += _sum(batch.column("consumo_total_kg"))
    futures.append(_submit_parquet(pool, targets, DIARIO, w, buffer))
    return futures


def _sum(column: Any) -> float:
    value = pc.sum(column).as_py()
    return float(value or 0.0)


def _count_historico(w: _Written, batch: Any) -> None:
    """Rows, distinct lots × pens and kg of historico_consumo, counted on the rows read back
    (an aggregation independent of the SQL that built consumo_diario)."""
    w.rows += batch.num_rows
    if not batch.num_rows:
        return
    animals = pc.cast(batch.column("quantidade_animais"), "float64")
    w.total_kg_historico += _sum(pc.multiply(batch.column("consumo_real"), animals))
    w.pair_chunks.append(pa.table([batch.column("id_lote"), batch.column("id_curral")], ["l", "c"]))


def _distinct_pairs(w: _Written) -> int:
    if not w.pair_chunks:
        return 0
    return pa.concat_tables(w.pair_chunks).group_by(["l", "c"]).aggregate([]).num_rows


def _submit_parquet(
    pool: ThreadPoolExecutor,
    targets: AnalyticsTargets,
    table: CuratedTable,
    w: _Written,
    buffer: ParquetBuffer,
) -> Future:
    data = buffer.finish()
    key = table.key(targets.curated_prefix, w.fazenda, w.dia)
    w.parquet_rows[table.name] = parquet_rows(data)  # the file's own footer
    w.parquet_bytes[table.name] = len(data)
    w.outputs[CURATED_ASSETS[table.name]] = targets.uri(key)
    return pool.submit(put_object, targets, key, data, "application/vnd.apache.parquet")


def _result(
    w: _Written,
    c: PartitionCounts,
    anomalies: int,
    listed: list[dict[str, Any]],
    threshold: float,
    targets: AnalyticsTargets,
) -> PartitionAnalytics:
    checks = (
        reconcile_outcome(c),
        anomaly_outcome(anomalies, listed, threshold),
        row_count_outcome(HISTORICO, w.parquet_rows[HISTORICO.name], c.rows),
        row_count_outcome(DIARIO, w.parquet_rows[DIARIO.name], c.lots),
    )
    glue = targets.glue_database
    materializations = {
        CONSUMO_DIARIO: summary_metadata(c, anomalies),
        DESCRIBE_CONSUMO: {**w.headline, "csv": w.outputs[DESCRIBE_CONSUMO]},
        CURATED_HISTORICO: curated_metadata(
            HISTORICO, w, glue, w.outputs[CURATED_HISTORICO], c.rows
        ),
        CURATED_DIARIO: curated_metadata(DIARIO, w, glue, w.outputs[CURATED_DIARIO], c.lots),
    }
    return PartitionAnalytics(
        fazenda=w.fazenda,
        dia=w.dia,
        counts=c,
        outputs=dict(w.outputs),
        materializations=materializations,
        checks=checks,
        describe=w.describe_records,
    )


def curated_metadata(
    table: CuratedTable, w: _Written | None, glue_database: str, uri: str, rows: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dagster/row_count": rows,
        "parquet": uri,
        "glue_table": f"{glue_database}.{table.name}",
    }
    if w is not None:
        out["bytes"] = w.parquet_bytes[table.name]
        out["glue_partition"] = f"fazenda={w.fazenda}/dia={w.dia.isoformat()}"
    return out
