"""The one load path from raw lines to the warehouse: Dagster asset, EC2 worker and benchmark.

Every line is parsed, validated and enriched by ``core.records`` and ends up either as a row of
``historico_consumo`` or as a rejection with a reason code, so ``landed == loaded + rejected``
always holds for a load. Rows are streamed: parsed into chunks that a background thread upserts
while the next chunk is parsed (the database drivers release the GIL while they wait), so memory
stays flat whatever the input size and Python and the database work at the same time. On
PostgreSQL the parsing thread also encodes each chunk as binary COPY data, so the writer thread
only moves bytes and waits; while a writer runs, the interpreter's GIL switch interval is 1 ms
instead of 5 ms so the writer is not left waiting behind the parser.

A reload on PostgreSQL (a chunk met stored rows) switches regime: each line is parsed only far
enough for its ``natural_key`` and ``row_fingerprint``, a chunk of (id, fingerprint, farm) keys
is looked up in one query while the next chunk is parsed, and only the lines not stored as-is are
cleaned and merged. A row is skipped only when its line, farm and rule all match the stored ones,
so a changed record, a moved client or a new rule is never skipped. Once a chunk is
mostly new, lines are cleaned straight away again.

Duplicates inside one load (the same ``id_treated_data`` twice, e.g. a redelivered event landed as
a second object) are rejected with code ``duplicate``: the first occurrence wins, in feed order.
The seen-set keeps a 64-bit hash per id rather than the id, so a million records cost ~100 MB.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

from orjson import JSONDecodeError
from orjson import loads as _orjson_loads

from feedlot_pipeline.core.lake import check_farm, parse_raw_key
from feedlot_pipeline.core.records import (
    UNROUTED_FARM,
    ConsumoMetaRule,
    RecordError,
    clean,
    get_rule,
    loads_line,
    natural_key,
    row_fingerprint,
)
from feedlot_pipeline.warehouse.store import CopyRows, LoadCounts, Rejection, Warehouse

__all__ = ["LoadReport", "PartitionLoader", "Rejection", "iter_file_lines", "load_file"]

DEFAULT_CHUNK_ROWS = 25_000
REJECTION_FLUSH = 5_000  # rejections kept before an unpartitioned load writes them
MAX_OBJECT_KEY = 512
_ID = itemgetter(0)


@dataclass
class LoadReport:
    """Counts of one load. ``landed == loaded + rejected``; ``loaded`` counts distinct rows."""

    landed: int = 0
    loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejected_by_code: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    matched: int = 0  # of ``unchanged``: found stored as-is by key and fingerprint, not cleaned

    @property
    def rows_per_second(self) -> float:
        return self.landed / self.seconds if self.seconds else 0.0


class _ChunkUpserter:
    """Upserts chunks of distinct rows, guessing from the last chunk whether they are all new.

    While chunks are all new (a first load) the warehouse may use a plain COPY; once a chunk met
    existing rows (a reload) it uses the merge directly, so a failed COPY is paid at most once
    per change of regime.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.assume_new = True

    def __call__(self, rows: list[tuple] | CopyRows) -> LoadCounts:
        counts = self.warehouse.upsert_consumo(rows, unique=True, assume_new=self.assume_new)
        self.assume_new = counts.inserted == (
            rows.count if isinstance(rows, CopyRows) else len(rows)
        )
        return counts


# While a writer thread runs, the GIL is handed over every 1 ms instead of 5: the writer wakes
# up after each block the server accepted and must not wait behind the parsing thread.
_SWITCH_INTERVAL = 0.001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def _fast_switching(on: bool) -> None:
    global _switch_users, _switch_saved
    with _switch_lock:
        if on:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, _SWITCH_INTERVAL))
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class _Writer(threading.Thread):
    """Writes chunks handed over by the parsing thread, one at a time, in order."""

    def __init__(self, warehouse: Warehouse, depth: int, owner: PartitionLoader) -> None:
        super().__init__(name="feedlot-loader-writer", daemon=True)
        self.warehouse = warehouse
        self.owner = weakref.ref(owner)  # a loader dropped without finish() ends the thread
        self.tasks: queue.Queue[tuple[str, list] | None] = queue.Queue(maxsize=depth)
        self.counts = LoadCounts()
        self.error: BaseException | None = None
        self.upsert = _ChunkUpserter(warehouse)

    def run(self) -> None:
        _fast_switching(True)
        try:
            self._loop()
        finally:
            _fast_switching(False)

    def _loop(self) -> None:
        while True:
            try:
                task = self.tasks.get(timeout=0.5)
            except queue.Empty:
                if self.owner() is None:
                    return
                continue
            if task is None:
                return
            if self.error is not None:
                _fail_probe(task, self.error)  # keep draining: the producer never blocks on us
                continue
            try:
                self._write(task)
            except BaseException as err:  # noqa: BLE001 - handed to the producer thread
                self.error = err
                _fail_probe(task, err)

    def _write(self, task: tuple[str, Any]) -> None:
        kind, items = task
        if kind == "rows":
            self.counts = self.counts + self.upsert(items)
        elif kind == "probe":
            keys, rule_name, future = items
            future.set_result(self.warehouse.stored_as_is(keys, rule_name))
        else:
            self.warehouse.upsert_rejections(items)


def _fail_probe(task: tuple[str, Any], error: BaseException) -> None:
    """A probe the writer will not answer fails, so the parsing thread never waits forever."""
    kind, items = task
    if kind == "probe" and not items[-1].done():
        items[-1].set_exception(error)


class PartitionLoader:
    """Feed raw objects line by line, then ``finish()`` for the report.

    With ``partition=(fazenda, dia)`` (the Dagster asset) records of another farm or day are
    rejected as ``partition_mismatch`` and ``finish()`` replaces that partition's rejections
    atomically. Without it (bulk loads) rejections are upserted by (object, line) as the load
    goes, filed under the partition their object key names, else under ``_unrouted`` and the
    load's day.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        clients: Mapping[str, str] | None = None,
        rule: ConsumoMetaRule | None = None,
        partition: tuple[str, date] | None = None,
        *,
        row_ts: datetime | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        background: bool = True,
    ) -> None:
        from feedlot_pipeline.core.settings import Settings

        self.warehouse = warehouse
        self.clients = dict(warehouse.clients() if clients is None else clients)
        self.rule = rule or get_rule(Settings().consumo_meta_rule)
        if partition is not None:
            partition = (check_farm(partition[0]), partition[1])
        self.partition = partition
        self.row_ts = row_ts or datetime.now(timezone.utc)
        if self.row_ts.tzinfo is None:
            raise ValueError("row_ts must be timezone-aware (UTC)")
        self.chunk_rows = max(1, chunk_rows)
        self._started = time.perf_counter()
        self._objects: list[str] = []
        self._seen: dict[int, int] = {}  # hash(id_treated_data) -> object index << 32 | line
        self._chunk: list[tuple] = []
        self._rejections: list[Rejection] = []
        self._report = LoadReport()
        self._finished = False
        self._writer: _Writer | None = None
        self._upsert = _ChunkUpserter(warehouse)
        if background:
            # PostgreSQL chunks wait as compact COPY bytes, so a deeper queue costs little.
            depth = 3 if warehouse.dialect == "postgresql" else 1
            self._writer = _Writer(warehouse, depth=depth, owner=self)
            self._writer.start()
        self._counts = LoadCounts()
        # Reload regime (PostgreSQL): once a chunk met stored rows, lines are first looked up by
        # key and fingerprint, a chunk at a time, and only those not stored as-is are cleaned.
        self._can_probe = warehouse.dialect == "postgresql"
        self._probing = False
        self._candidates: list[tuple] = []
        self._probes: deque[tuple[Future, list[tuple]]] = deque()

    # --- input ---------------------------------------------------------------------------------

    def feed(
        self, object_key: str, lines: Iterable[bytes | str], correlation_id: str | None = None
    ) -> None:
        """Process every line of one raw object; line numbers start at 1 per object.

        ``correlation_id`` (the object's ``correlation-id`` metadata) goes on its rows and
        rejections.
        """
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if len(object_key) > MAX_OBJECT_KEY:
            raise ValueError(f"object key longer than {MAX_OBJECT_KEY} characters: {object_key!r}")
        index = len(self._objects)
        self._objects.append(object_key)
        if index >= 1 << 31:
            raise ValueError("too many objects in one load")
        clients, rule, row_ts = self.clients, self.rule, self.row_ts
        seen, chunk, candidates = self._seen, self._chunk, self._candidates
        expected, chunk_rows, probing = self.partition, self.chunk_rows, self._probing
        base = index << 32
        line_no = 0
        try:
            for line_no, line in enumerate(lines, 1):  # noqa: B007 - read in finally
                try:
                    raw = _orjson_loads(line)
                except JSONDecodeError:
                    raw = loads_line(line)  # the line's text, rejected by clean()
                if probing:
                    key = natural_key(raw, clients)
                    if key is None or (expected is not None and key[1:] != expected):
                        key_id = fazenda = None  # cleaned in full, which says why it is rejected
                    else:
                        key_id, fazenda = key[0], key[1]
                    fp = row_fingerprint(line)
                    candidates.append(
                        (key_id, fp, fazenda, line, raw, index, line_no, correlation_id)
                    )
                    if len(candidates) >= chunk_rows:
                        self._send_probe()
                        candidates, chunk, probing = self._candidates, self._chunk, self._probing
                    continue
                # The first-load path, inlined: _clean_one is the same for one line.
                fp = row_fingerprint(line)
                try:
                    row = clean(raw, clients, rule, object_key, row_ts, correlation_id, fp)
                except RecordError as err:
                    self._reject(
                        object_key, line_no, err.code, err.reason, line, raw, correlation_id
                    )
                    continue
                if expected is not None and (
                    row[12] != expected[0] or row[10].date() != expected[1]
                ):
                    reason = self._mismatch_reason(row)
                    self._reject(
                        object_key, line_no, "partition_mismatch", reason, line, raw, correlation_id
                    )
                    continue
                here = base | line_no
                first = seen.setdefault(hash(row[0]), here)
                if first != here:
                    reason = self._duplicate_reason(row[0], first)
                    self._reject(
                        object_key, line_no, "duplicate", reason, line, raw, correlation_id
                    )
                    continue
                chunk.append(row)
                if len(chunk) >= chunk_rows:
                    self._flush_rows()
                    candidates, chunk, probing = self._candidates, self._chunk, self._probing
        finally:
            self._report.landed += line_no

    def _clean_one(
        self,
        object_key: str,
        index: int,
        line_no: int,
        line: bytes | str,
        raw: Any,
        correlation_id: str | None,
        fp: int,
    ) -> None:
        """The rules for one line: a row of the current chunk, or a rejection with its reason."""
        try:
            row = clean(raw, self.clients, self.rule, object_key, self.row_ts, correlation_id, fp)
        except RecordError as err:
            self._reject(object_key, line_no, err.code, err.reason, line, raw, correlation_id)
            return
        expected = self.partition
        if expected is not None and (row[12] != expected[0] or row[10].date() != expected[1]):
            reason = self._mismatch_reason(row)
            self._reject(
                object_key, line_no, "partition_mismatch", reason, line, raw, correlation_id
            )
            return
        if self._first_time(row[0], index, line_no, object_key, line, raw, correlation_id):
            self._chunk.append(row)
            if len(self._chunk) >= self.chunk_rows:
                self._flush_rows()

    def _first_time(
        self,
        row_id: str,
        index: int,
        line_no: int,
        object_key: str,
        line: bytes | str,
        raw: Any,
        correlation_id: str | None,
    ) -> bool:
        """Record where ``row_id`` was first met; False (and a ``duplicate`` rejection) after."""
        here = index << 32 | line_no
        first = self._seen.setdefault(hash(row_id), here)
        if first == here:
            return True
        reason = self._duplicate_reason(row_id, first)
        self._reject(object_key, line_no, "duplicate", reason, line, raw, correlation_id)
        return False

    def _duplicate_reason(self, row_id: str, first: int) -> str:
        where = f"{self._objects[first >> 32]} line {first & 0xFFFFFFFF}"
        return f"duplicate of {where} (id_treated_data {row_id})"

    def _mismatch_reason(self, row: tuple) -> str:
        fazenda, dia = self.partition or ("", None)
        return f"record belongs to partition {row[12]}/{row[10].date()}, not {fazenda}/{dia}"

    # --- reload regime -------------------------------------------------------------------------

    def _send_probe(self) -> None:
        """Ask the writer which lines of the pending candidates are stored as-is (in key order)."""
        candidates, self._candidates = self._candidates, []
        if not candidates:
            return
        keys = sorted((c[0], c[1], c[2]) for c in candidates if c[0] is not None)
        future: Future = Future()
        self._submit("probe", (self.warehouse.encode_keys(keys), self.rule.name, future))
        self._probes.append((future, candidates))
        # One probe stays in flight, answered by the server while the next chunk is parsed;
        # none once a probe found mostly new lines, so lines are taken in feed order.
        while len(self._probes) > (1 if self._probing else 0):
            self._resolve(*self._probes.popleft())

    def _resolve(self, future: Future, candidates: list[tuple]) -> None:
        """Apply a probe's answer in feed order: skip stored lines, clean the others in full."""
        stored = future.result()
        matched = 0
        first_time = self._first_time
        for key_id, fp, _, line, raw, index, line_no, correlation_id in candidates:
            object_key = self._objects[index]
            if key_id is not None and key_id in stored:
                if first_time(key_id, index, line_no, object_key, line, raw, correlation_id):
                    matched += 1
                continue
            self._clean_one(object_key, index, line_no, line, raw, correlation_id, fp)
        self._report.matched += matched
        if matched * 2 < len(candidates):
            self._probing = False  # mostly new or changed lines: clean them straight away

    def _drain_probes(self) -> None:
        self._send_probe()
        while self._probes:
            self._resolve(*self._probes.popleft())

    def _reject(
        self,
        object_key: str,
        line_no: int,
        code: str,
        reason: str,
        line: bytes | str,
        raw: Any,
        correlation_id: str | None = None,
    ) -> None:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
        cod = raw.get("cod_cliente") if isinstance(raw, dict) else None
        rejection = Rejection(
            raw_object_key=object_key,
            line_no=line_no,
            reason_code=code,
            reason=reason,
            raw_record=text,
            cod_cliente=cod if isinstance(cod, str) else None,
            correlation_id=correlation_id,
        )
        by_code = self._report.rejected_by_code
        by_code[code] = by_code.get(code, 0) + 1
        self._report.rejected += 1
        self._rejections.append(rejection)
        if self.partition is None and len(self._rejections) >= REJECTION_FLUSH:
            self._flush_rejections()

    # --- output --------------------------------------------------------------------------------

    def _submit(self, kind: str, items: Any) -> None:
        writer = self._writer
        if writer is None:
            if kind == "rows":
                self._counts = self._counts + self._upsert(items)
            elif kind == "probe":
                keys, rule_name, future = items
                future.set_result(self.warehouse.stored_as_is(keys, rule_name))
            else:
                self.warehouse.upsert_rejections(items)
            return
        if writer.error is not None:
            raise writer.error
        writer.tasks.put((kind, items))

    def _flush_rows(self) -> None:
        if self._can_probe and not self._probing:
            upserter = self._writer.upsert if self._writer is not None else self._upsert
            self._probing = not upserter.assume_new  # the last chunk written met stored rows
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            # In key order the server walks the primary-key index forward instead of jumping
            # around it: measured on 1M rows, index probes of a reload ~1.8x faster.
            chunk.sort(key=_ID)
            if self.warehouse.dialect == "postgresql":
                # Encoded here, in the parsing thread: the writer thread then only waits on the
                # server, so it never queues for the GIL (which would stall the COPY stream).
                self._submit("rows", self.warehouse.encode_rows(chunk))
            else:
                self._submit("rows", chunk)

    def _flush_rejections(self) -> None:
        if not self._rejections:
            return
        batch, self._rejections = self._rejections, []
        for rejection in batch:
            rejection.fazenda, rejection.dia = self._bulk_partition(rejection.raw_object_key)
        self._submit("rejections", batch)

    def _bulk_partition(self, object_key: str) -> tuple[str, date]:
        try:
            return parse_raw_key(object_key)
        except ValueError:
            return UNROUTED_FARM, self.row_ts.astimezone(timezone.utc).date()

    def finish(self) -> LoadReport:
        """Write what is pending, wait for the writer and return the report."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        try:
            self._drain_probes()
            self._flush_rows()
            if self.partition is None:
                self._flush_rejections()
        finally:
            writer = self._writer
            if writer is not None:
                writer.tasks.put(None)
                writer.join()
        if writer is not None:
            if writer.error is not None:
                raise writer.error
            self._counts = self._counts + writer.counts
        if self.partition is not None:
            fazenda, dia = self.partition
            self.warehouse.replace_rejections(fazenda, dia, self._rejections)
            self._rejections = []
        report = self._report
        report.inserted = self._counts.inserted
        report.updated = self._counts.updated
        report.unchanged = self._counts.unchanged + report.matched
        report.loaded = len(self._seen)
        report.seconds = time.perf_counter() - self._started
        if report.loaded != report.inserted + report.updated + report.unchanged:
            raise AssertionError(f"load counts do not add up: {report}")
        if report.landed != report.loaded + report.rejected:
            raise AssertionError(f"load does not reconcile: {report}")
        self._seen = {}
        return report

    def abort(self) -> None:
        """Stop the writer without writing what is pending (after an error while feeding)."""
        if self._finished:
            return
        self._finished = True
        if self._writer is not None:
            self._writer.tasks.put(None)
            self._writer.join()


def iter_file_lines(path: str | Path) -> Iterator[bytes]:
    """Non-empty lines of a JSON Lines file without their line ends, streamed.

    Blank lines are skipped, as the lake's reader does, so line numbers agree between the two.
    """
    with open(path, "rb", buffering=1 << 20) as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def load_file(
    warehouse: Warehouse,
    path: str | Path,
    *,
    object_key: str | None = None,
    clients: Mapping[str, str] | None = None,
    rule: ConsumoMetaRule | None = None,
    partition: tuple[str, date] | None = None,
    row_ts: datetime | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> LoadReport:
    """Load one JSON Lines file through the load path (bulk imports, the benchmark)."""
    loader = PartitionLoader(
        warehouse, clients, rule, partition, row_ts=row_ts, chunk_rows=chunk_rows
    )
    try:
        loader.feed(object_key or f"file/{Path(path).name}", iter_file_lines(path))
    except BaseException:
        loader.abort()
        raise
    return loader.finish()
