"""bulk_import: a large historical file from S3 into the raw zone and the warehouse, on the worker.

The file-drop Lambda hands files above FEEDLOT_FILEDROP_MAX_BYTES to this job. It runs the core
path's own code on the file, in chunks, so memory stays bounded (one chunk of records plus the
load's duplicate check, ~100 bytes per loaded record):

1. the input object is downloaded to the work dir (``<workdir>/tmp/<job-id>/``, EBS) and parsed
   by ``ingestion.files.iter_chunks`` (JSON Lines, a JSON array or CSV, optionally gzip; a bad
   record is kept as its text, as the file-drop Lambda does);
2. each record is routed with ``core.records.route`` and written to the raw zone, one object per
   (farm, day) per chunk: ``core.lake.raw_object_key(fazenda, dia, "worker", f"{import_id}-{n}")``
   where ``import_id`` hashes the input's bucket, key, ETag and the chunk limits, and ``n`` is the
   chunk number. The same file therefore maps to the same keys in every run (an existing object
   is never overwritten) and a re-import duplicates nothing. No sensor-queue notice is sent: this
   job loads the warehouse itself;
3. the same lines are fed, object by object, to ``warehouse.loader.PartitionLoader``, so the
   core cleaning, enrichment, latest-landing-wins and rejection rules apply, every row keeps the
   key of the raw object it came from (and the import id as its correlation id), and every object
   gets its row in the load ledger. Records the router could not file under a real farm land
   under ``_unrouted``, as on the core path, and get the same verdicts there (the ``clean`` error,
   else ``partition_mismatch``): nothing of them loads;
4. a JSON report goes to ``<output>/report.json`` and the job's log to ``<output>/<job-id>.log``;
5. Dagster Pipes gets log lines and per-chunk progress, then one custom message listing the
   ``historico_consumo`` partitions touched, then the materialization of ``worker_bulk_import``.

Custom messages (``pipes.report_custom_message``; contracts ``core.contracts.ProgressMessage`` and
``PartitionsMessage``). Progress, after every chunk::

    {"type": "bulk_import.progress", "job_id": "…", "chunks": 3, "records": 150000,
     "records_per_second": 61234.5, "partitions_so_far": 12}

The partitions touched, once at the end (``fazenda``/``dia`` are the two dimensions of
``historico_consumo``'s MultiPartitionsDefinition; counts are per partition, for this file only;
``records == loaded + rejected`` in each entry)::

    {"type": "historico_consumo_partitions", "version": 1, "asset_key": "historico_consumo",
     "job": "bulk_import", "job_id": "…", "input": "s3://…", "import_id": "bulk-…",
     "partitions": [{"fazenda": "fazenda_um", "dia": "2023-01-01", "records": 26,
                     "loaded": 25, "rejected": 1, "raw_objects": 1}, …],
     "totals": {"records": …, "loaded": …, "inserted": …, "updated": …, "unchanged": …,
                "rejected": …, "rejected_by_code": {"unknown_client": 3, …}}}

Invariant, checked before anything is reported: records = loaded + rejected, and loaded =
inserted + updated + unchanged; a re-import of the same file inserts and updates nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import PartitionsMessage, ProgressMessage
from feedlot_pipeline.core.lake import raw_object_key
from feedlot_pipeline.core.memory import peak_rss_mb
from feedlot_pipeline.core.metrics import record_worker_job
from feedlot_pipeline.core.records import (
    get_rule,
    route,
)
from feedlot_pipeline.core.settings import Settings, WorkerSettings
from feedlot_pipeline.ingestion.files import FileStats, iter_chunks, open_local
from feedlot_pipeline.ingestion.landing import encode_raw
from feedlot_pipeline.worker.runtime import JobContext, WorkerError, parse_s3_uri

SOURCE = "worker"
ASSET_KEY = "worker_bulk_import"
PARTITIONED_ASSET = "historico_consumo"
PUT_THREADS = 8
DOWNLOAD_BLOCK = 1 << 20
CHUNK_BYTES = 64 << 20  # iter_chunks' byte bound per chunk (records bound it first)
_KEY_BATCH = 1000


def import_id(bucket: str, key: str, etag: str, chunking: str = "") -> str:
    """Names this input version in raw-zone keys: the same file gives the same keys.

    ``chunking`` (the chunk limits) is part of it: other limits cut other chunks, and an object
    key must never name two different contents (an existing object is not overwritten).
    """
    ident = f"{bucket}\n{key}\n{etag.strip(chr(34))}\n{chunking}"
    return f"bulk-{hashlib.sha256(ident.encode()).hexdigest()[:32]}"


@dataclass
class PartitionCounts:
    """What this import put in one (farm, day) partition."""

    records: int = 0
    raw_objects: int = 0
    loaded: int = 0
    rejected: int = 0

    def entry(self, fazenda: str, dia: date) -> dict[str, Any]:
        return {
            "fazenda": fazenda,
            "dia": dia.isoformat(),
            "records": self.records,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "raw_objects": self.raw_objects,
        }


@dataclass
class _Progress:
    records: int = 0
    chunks: int = 0
    objects_written: int = 0
    objects_existing: int = 0
    keys: list[str] = field(default_factory=list)
    # seconds spent per stage (the main thread; raw-zone PUTs and DB writes overlap with it)
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("parse", "route", "load", "raw_zone_wait"), 0.0)
    )
    partitions: dict[tuple[str, date], PartitionCounts] = field(default_factory=dict)


def _tick(timings: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    timings[stage] += now - since
    return now


def _head_input(s3: Any, bucket: str, key: str, uri: str) -> dict[str, Any]:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise WorkerError(f"input object {uri} does not exist") from None
        if code in ("NoSuchBucket",):
            raise WorkerError(f"input bucket of {uri} does not exist") from None
        raise


def _put_raw(s3: Any, bucket: str, key: str, lines: list[bytes], meta: dict[str, str]) -> bool:
    """Write one raw-zone object unless it exists (a re-import); True when written.

    ``If-None-Match: *`` makes S3 refuse to overwrite, in the same request.
    """
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=b"\n".join(lines) + b"\n",
            ContentType="application/x-ndjson",
            Metadata={**meta, "records": str(len(lines))},
            IfNoneMatch="*",
        )
    except s3.exceptions.ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.response.get("Error", {}).get("Code")
        if status == 412 or code in ("PreconditionFailed", "412"):
            return False
        raise
    return True


def _download(s3: Any, bucket: str, key: str, etag: str, path: Path) -> None:
    """Stream exactly the version that was hashed (If-Match its ETag) into the work dir."""
    kwargs = {"IfMatch": etag} if etag else {}
    got = s3.get_object(Bucket=bucket, Key=key, **kwargs)
    try:
        with path.open("wb") as out:
            shutil.copyfileobj(got["Body"], out, DOWNLOAD_BLOCK)
    finally:
        got["Body"].close()


def _open_warehouse() -> Any:
    """The warehouse of FEEDLOT_WAREHOUSE_URL, connected (a clear error when it is down)."""
    import sqlalchemy as sa

    from feedlot_pipeline.warehouse.store import Warehouse

    warehouse = Warehouse.from_env()
    try:
        with warehouse.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as err:
        warehouse.dispose()
        raise WorkerError(
            f"warehouse {warehouse!r} is unreachable: {str(err.orig or err).strip()}"
        ) from None
    return warehouse


def bulk_import(ctx: JobContext) -> dict[str, Any]:
    """The job: see the module docstring."""
    settings = Settings()
    chunk_records = int(ctx.options.get("chunk_records") or WorkerSettings().worker_chunk_records)
    in_bucket, in_key = parse_s3_uri(ctx.input_uri)
    if not in_key or in_key.endswith("/"):
        raise WorkerError(f"--input must name an object, not {ctx.input_uri!r}")
    s3 = client("s3")
    head = _head_input(s3, in_bucket, in_key, ctx.input_uri)
    etag = head.get("ETag", "")
    max_record_bytes = settings.filedrop_max_record_bytes
    chunk_bytes = max(CHUNK_BYTES, chunk_records * 1024)
    ident = import_id(in_bucket, in_key, etag, f"{chunk_records}/{chunk_bytes}/{max_record_bytes}")
    size = int(head.get("ContentLength") or 0)
    ctx.log(f"input {ctx.input_uri}: {size:,} bytes, ETag {etag}; raw-zone ids {ident}-<chunk>")

    warehouse = _open_warehouse()
    try:
        local = ctx.tmp_dir / "input"
        started = time.perf_counter()
        _download(s3, in_bucket, in_key, etag, local)
        ctx.log(
            f"downloaded to {local} in {time.perf_counter() - started:.1f} s "
            f"({local.stat().st_size:,} bytes)"
        )
        importer = _Importer(ctx, settings, warehouse, ident)
        stats = FileStats()
        with open_local(str(local)) as handle:
            chunks = iter_chunks(
                handle,
                in_key,
                content_type=head.get("ContentType") or "",
                chunk_records=chunk_records,
                chunk_bytes=chunk_bytes,
                max_record_bytes=max_record_bytes,
                stats=stats,
            )
            report = importer.run(chunks)
        result = _reconcile(warehouse, report, importer.progress)
    finally:
        warehouse.dispose()

    progress = importer.progress
    seconds = ctx.elapsed()
    result.update(
        {
            "job": ctx.job,
            "job_id": ctx.job_id,
            "status": "succeeded",
            "input": ctx.input_uri,
            "input_etag": etag.strip('"'),
            "input_bytes": size,
            "format": stats.kind,
            "gzip": stats.gzip,
            "unparsed": stats.unparsed,
            "import_id": ident,
            "lake_bucket": settings.lake_bucket,
            "chunk_records": chunk_records,
            "chunks": progress.chunks,
            "raw_objects": len(progress.keys),
            "raw_objects_written": progress.objects_written,
            "raw_objects_existing": progress.objects_existing,
            "consumo_meta_rule": importer.rule.name,
            "seconds": round(seconds, 3),
            "load_seconds": round(report.seconds, 3),
            "records_per_second": round(result["records"] / seconds, 1) if seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "stage_seconds": {k: round(v, 3) for k, v in progress.timings.items()},
            "workdir": str(ctx.workdir),
        }
    )
    _finish(ctx, result)
    # Best effort, once per job (never per record or chunk): a CloudWatch failure is only logged.
    record_worker_job(job=ctx.job, seconds=seconds, records=result["records"])
    return result


class _Importer:
    """Routes chunks, writes their raw objects and feeds one bulk PartitionLoader."""

    def __init__(self, ctx: JobContext, settings: Settings, warehouse: Any, ident: str) -> None:
        self.ctx = ctx
        self.settings = settings
        self.warehouse = warehouse
        self.ident = ident
        self.clients = warehouse.clients()
        self.rule = get_rule(settings.consumo_meta_rule)
        self.row_ts = datetime.now(timezone.utc)
        self.bounds = settings.valid_days(self.row_ts.date())
        self.progress = _Progress()
        self._chunk_ready = time.perf_counter()

    def run(self, chunks: Iterable[list[Any]]) -> Any:
        """Import every chunk; the loader's report (rows of real farms only)."""
        from feedlot_pipeline.warehouse.loader import PartitionLoader

        loader = PartitionLoader(self.warehouse, self.clients, self.rule, None, row_ts=self.row_ts)
        try:
            with ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="feedlot-raw-put") as pool:
                for chunk_no, chunk in enumerate(chunks):
                    self._chunk(chunk_no, chunk, loader, pool)
            mark = time.perf_counter()
            report = loader.finish()
            # The ledger: the streaming path and the reconciliation skip these objects.
            self.warehouse.record_loads(list(report.objects.values()), self.ctx.job_id)
            _tick(self.progress.timings, "load", mark)
            return report
        except BaseException:
            loader.abort()
            raise

    def _chunk(self, chunk_no: int, chunk: list[Any], loader: Any, pool: Any) -> None:
        """Route one chunk, write its raw objects (in threads), feed the loader the same lines."""
        progress, ident = self.progress, self.ident
        groups: dict[tuple[str, date], list[bytes]] = {}
        today = self.row_ts.date()
        timer = progress.timings
        mark = time.perf_counter()
        timer["parse"] += mark - self._chunk_ready
        for raw in chunk:
            where = route(raw, self.clients, today, self.bounds)
            groups.setdefault((where.fazenda, where.dia), []).append(encode_raw(raw))
        mark = _tick(timer, "route", mark)
        event_id = f"{ident}-{chunk_no:05d}"
        meta = {
            "source": SOURCE,
            "event-id": event_id,
            "correlation-id": ident,
            "received-at": self.row_ts.isoformat(),
        }
        puts: list[Future] = []
        s3 = client("s3")
        for (fazenda, dia), lines in groups.items():
            key = raw_object_key(fazenda, dia, SOURCE, event_id)
            puts.append(pool.submit(_put_raw, s3, self.settings.lake_bucket, key, lines, meta))
            counts = progress.partitions.setdefault((fazenda, dia), PartitionCounts())
            counts.records += len(lines)
            counts.raw_objects += 1
            progress.keys.append(key)
            # The one loader judges every line, _unrouted ones included (never a real farm's).
            loader.feed(key, lines, ident, self.row_ts)
            mark = _tick(timer, "load", mark)
        for put in puts:  # this chunk's objects are in the lake before the next chunk starts
            if put.result():
                progress.objects_written += 1
            else:
                progress.objects_existing += 1
        mark = _tick(timer, "raw_zone_wait", mark)
        progress.records += len(chunk)
        progress.chunks = chunk_no + 1
        elapsed = self.ctx.elapsed()
        rate = progress.records / elapsed if elapsed else 0.0
        self.ctx.log(
            f"chunk {chunk_no + 1}: {progress.records:,} records so far "
            f"({rate:,.0f} records/s), {len(progress.partitions)} partitions, "
            f"{len(progress.keys)} raw objects"
        )
        self.ctx.report_custom_message(
            ProgressMessage(
                job_id=self.ctx.job_id,
                chunks=progress.chunks,
                records=progress.records,
                records_per_second=round(rate, 1),
                partitions_so_far=len(progress.partitions),
            ).to_dict()
        )
        self._chunk_ready = time.perf_counter()


def _reconcile(warehouse: Any, report: Any, progress: _Progress) -> dict[str, Any]:
    """Counts of the whole import, per partition too; WorkerError when they do not add up."""
    for entry in report.objects.values():
        counts = progress.partitions.get((entry.fazenda, entry.dia))
        if counts is not None:
            counts.loaded += entry.loaded
            counts.rejected += entry.rejected
    filed = warehouse.rejection_counts(progress.keys)
    if sum(filed.values()) != report.rejected:
        raise WorkerError(
            f"{report.rejected} lines rejected but {sum(filed.values())} rejections recorded"
        )
    if report.landed != progress.records:
        raise WorkerError(f"read {progress.records} records but processed {report.landed}")
    if report.landed != report.loaded + report.rejected:
        raise WorkerError(
            f"records {report.landed} != loaded {report.loaded} + rejected {report.rejected}"
        )
    partitions = [
        counts.entry(fazenda, dia) for (fazenda, dia), counts in sorted(progress.partitions.items())
    ]
    if sum(p["rejected"] for p in partitions) != report.rejected:
        raise WorkerError("per-partition rejections do not add up to the load's rejections")
    return {
        "records": report.landed,
        "loaded": report.loaded,
        "inserted": report.inserted,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "superseded": report.superseded,
        "rejected": report.rejected,
        "rejected_by_code": dict(sorted(report.rejected_by_code.items())),
        "partitions_touched": len(partitions),
        "partitions": partitions,
    }


def _finish(ctx: JobContext, result: dict[str, Any]) -> None:
    """Write the report and the log to --output, then report to Dagster."""
    report_uri = ctx.put_output(
        "report.json", json.dumps(result, indent=2).encode(), "application/json"
    )
    totals = {
        k: result[k] for k in ("records", "loaded", "inserted", "updated", "unchanged", "rejected")
    }
    ctx.log(
        f"done: {result['records']:,} records, {result['loaded']:,} loaded "
        f"({result['inserted']:,} new, {result['updated']:,} changed, "
        f"{result['unchanged']:,} unchanged), {result['rejected']:,} rejected "
        f"{result['rejected_by_code']}; {result['partitions_touched']} partitions; "
        f"{result['seconds']:.1f} s, {result['records_per_second']:,.0f} records/s, "
        f"peak RSS {result['peak_rss_mb']:,.0f} MiB; report {report_uri}"
    )
    log_uri = ctx.put_log()
    result["report_uri"] = report_uri
    result["log_uri"] = log_uri
    ctx.report_custom_message(
        PartitionsMessage(
            asset_key=PARTITIONED_ASSET,
            job=ctx.job,
            job_id=ctx.job_id,
            input=ctx.input_uri,
            import_id=result["import_id"],
            partitions=result["partitions"],
            totals={**totals, "rejected_by_code": result["rejected_by_code"]},
        ).to_dict()
    )
    ctx.report_materialization(
        ASSET_KEY,
        {
            **totals,
            "rejected_by_code": {"raw_value": result["rejected_by_code"], "type": "json"},
            "partitions_touched": result["partitions_touched"],
            "raw_objects": result["raw_objects"],
            "raw_objects_written": result["raw_objects_written"],
            "seconds": result["seconds"],
            "records_per_second": result["records_per_second"],
            "peak_rss_mb": result["peak_rss_mb"],
            "input": ctx.input_uri,
            "report": {"raw_value": report_uri, "type": "url"},
            "log": {"raw_value": log_uri, "type": "url"},
        },
    )
