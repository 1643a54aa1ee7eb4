"""An append-only journal of state records: what keeps the local moto's lake and dead letters.

moto holds everything in memory. The local stack's moto (``moto_server.py``) writes the state of
every S3 object, bucket and dead-letter queue message it changes to this journal *before* it
answers the request, and reads the journal back into a fresh moto before it serves. This module
knows nothing of moto: a record is a JSON header and an opaque body, identified by
``(kind, *id)``; a later record of the same identity replaces the earlier one, and a ``del``
record removes it (a removed bucket or queue takes its objects or messages with it).

On disk: ``<dir>/NNNNNNNN.log`` segments, read in order. A record is framed as
``magic | crc32 | header length | body length | header JSON | body``; the checksum covers header
and body, so a record cut short by a kill (a write the process never acknowledged) is recognised
and cut off the end of the last segment. Every start appends to a new segment. Compaction copies
the live records, as they are, into a segment that begins with a ``snapshot`` record; reading
starts over at the newest snapshot, so a crash in the middle of a compaction loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

MAGIC = b"FLJ1"
FRAME = struct.Struct(">4sIIQ")  # magic, crc32(header + body), header length, body length
SEGMENT_SUFFIX = ".log"
# Child kinds go with their parent: a deleted bucket takes its objects, a queue its messages.
CHILDREN = {"bucket": "object", "queue": "message"}
SNAPSHOT = "snapshot"
RESET = "reset"
SEGMENT = "segment"
MARKERS = (SNAPSHOT, RESET, SEGMENT)


class JournalError(RuntimeError):
    """The journal cannot be read (damaged in the middle); the message says where and what to do."""


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    """One framed record."""
    head = orjson.dumps(header)
    crc = zlib.crc32(body, zlib.crc32(head))
    return FRAME.pack(MAGIC, crc, len(head), len(body)) + head + body


def identity(header: dict[str, Any]) -> tuple:
    return (header["k"], *header.get("id", ()))


@dataclass(frozen=True)
class Location:
    segment: int
    offset: int
    length: int


@dataclass
class Index:
    """The live records after reading the journal: identity → where its latest record is."""

    live: dict[tuple, Location] = field(default_factory=dict)
    total_bytes: int = 0  # every record read, live or not
    repaired_bytes: int = 0  # a torn tail cut off the last segment
    segments: list[int] = field(default_factory=list)

    @property
    def live_bytes(self) -> int:
        return sum(loc.length for loc in self.live.values())

    def count(self, kind: str) -> int:
        return sum(1 for key in self.live if key[0] == kind)

    def apply(self, header: dict[str, Any], location: Location) -> None:
        kind = header["k"]
        if kind in (SNAPSHOT, RESET):
            self.live.clear()
            return
        if kind == SEGMENT:
            return
        key = identity(header)
        if header.get("op") == "del":
            self.live.pop(key, None)
            child = CHILDREN.get(kind)
            if child:
                prefix = key[1:]
                for other in [
                    k for k in self.live if k[0] == child and k[1:][: len(prefix)] == prefix
                ]:
                    del self.live[other]
        else:
            self.live[key] = location


class Journal:
    """One journal folder: read it (``open``), replay its live records, append to it."""

    def __init__(self, folder: Path, fsync: bool = False, sync_interval: float = 1.0) -> None:
        """``fsync``: fsync before ``sync`` returns (each acknowledged write survives a power
        cut); else a background thread fsyncs every ``sync_interval`` seconds (each acknowledged
        write survives a kill of the process, which is what ``os.write`` guarantees)."""
        self.folder = folder
        self.fsync = fsync
        self.sync_interval = sync_interval
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._segment = 0
        self._written = 0  # bytes appended to the current segment
        self._synced = 0
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()

    def lock(self) -> None:
        """Take the folder for this process (until it exits); JournalError if another has it."""
        import fcntl

        fd = os.open(self.folder / "lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                f"the local lake journal {self.folder} is in use by another moto process"
            ) from None
        self._lock_fd = fd

    # --- reading --------------------------------------------------------------------------------

    def path(self, segment: int) -> Path:
        return self.folder / f"{segment:08d}{SEGMENT_SUFFIX}"

    def segments(self) -> list[int]:
        found = []
        for path in self.folder.glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append(int(path.stem))
        return sorted(found)

    def scan(self) -> Index:
        """Read every segment into an index of live records; cut a torn tail off the last one."""
        index = Index()
        segments = self.segments()
        # Start at the newest complete snapshot: older segments are what it compacted (left
        # behind by a crash between the snapshot's rename and their removal).
        for number in reversed(segments):
            if self._starts_with_snapshot(number):
                for older in [s for s in segments if s < number]:
                    self.path(older).unlink(missing_ok=True)
                segments = [s for s in segments if s >= number]
                break
        for stale in self.folder.glob(f"*{SEGMENT_SUFFIX}.tmp"):  # a compaction cut short
            stale.unlink(missing_ok=True)
        index.segments = segments
        for position, number in enumerate(segments):
            last = position == len(segments) - 1
            index.repaired_bytes += self._scan_segment(number, index, repair=last)
        return index

    def _starts_with_snapshot(self, number: int) -> bool:
        try:
            with open(self.path(number), "rb") as src:
                first = next(_records(src, self.path(number)), None)
        except (OSError, JournalError):
            return False
        return first is not None and first[1].get("k") == SNAPSHOT

    def _scan_segment(self, number: int, index: Index, repair: bool) -> int:
        path = self.path(number)
        good = 0
        with open(path, "rb") as src:
            try:
                for offset, header, length in _records(src, path):
                    index.apply(header, Location(number, offset, length))
                    index.total_bytes += length
                    good = offset + length
            except JournalError:
                if not repair:
                    raise
        size = path.stat().st_size
        if good < size:  # a record the process never finished writing (and never acknowledged)
            if not repair:
                raise JournalError(_damaged(path, good))
            with open(path, "r+b") as out:
                out.truncate(good)
                os.fsync(out.fileno())
        return size - good

    def replay_order(self, index: Index, kinds: Iterable[str]) -> Iterator[tuple[dict, bytes]]:
        """Live records kind by kind (parents before children), each kind in journal order."""
        order = {kind: n for n, kind in enumerate(kinds)}
        ordered = sorted(
            (
                (order[key[0]], loc.segment, loc.offset, loc.length)
                for key, loc in index.live.items()
                if key[0] in order
            ),
        )
        handles: dict[int, tuple[Any, Path]] = {}
        try:
            for _, segment, offset, length in ordered:
                if segment not in handles:
                    path = self.path(segment)
                    handles[segment] = (open(path, "rb"), path)  # noqa: SIM115
                src, path = handles[segment]
                src.seek(offset)
                yield _decode(src.read(length), path, offset)
        finally:
            for src, _ in handles.values():
                src.close()

    # --- compaction -----------------------------------------------------------------------------

    def should_compact(self, index: Index, min_garbage: int = 16 << 20) -> bool:
        """When dead records outweigh live ones (and are worth a rewrite), or segments pile up."""
        garbage = index.total_bytes - index.live_bytes
        return (garbage > min_garbage and garbage > index.live_bytes) or len(index.segments) > 16

    def compact(self, index: Index) -> Index:
        """Copy the live records into a new snapshot segment; drop the segments it replaces."""
        number = (max(index.segments) if index.segments else 0) + 1
        final = self.path(number)
        tmp = final.with_name(final.name + ".tmp")
        compacted = Index(segments=[number])
        ordered = sorted(index.live.items(), key=lambda item: (item[1].segment, item[1].offset))
        handles: dict[int, Any] = {}
        try:
            with open(tmp, "wb") as out:
                marker = encode({"k": SNAPSHOT})
                out.write(marker)
                offset = len(marker)
                for key, loc in ordered:
                    if loc.segment not in handles:
                        handles[loc.segment] = open(self.path(loc.segment), "rb")  # noqa: SIM115
                    src = handles[loc.segment]
                    src.seek(loc.offset)
                    out.write(src.read(loc.length))
                    compacted.live[key] = Location(number, offset, loc.length)
                    offset += loc.length
                out.flush()
                os.fsync(out.fileno())
            compacted.total_bytes = offset
        finally:
            for src in handles.values():
                src.close()
        os.replace(tmp, final)
        _fsync_dir(self.folder)
        for old in index.segments:
            self.path(old).unlink(missing_ok=True)
        _fsync_dir(self.folder)
        return compacted

    # --- appending ------------------------------------------------------------------------------

    def open_segment(self, index: Index, header: dict[str, Any]) -> None:
        """Start appending to a new segment (after ``scan``, and ``compact`` if wanted)."""
        self._segment = max([*index.segments, *self.segments(), 0]) + 1
        self._fd = os.open(self.path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._written = self._synced = 0
        _fsync_dir(self.folder)
        self.append([encode({"k": SEGMENT, **header})])
        if not self.fsync:
            self._syncer = threading.Thread(target=self._sync_now_and_then, daemon=True)
            self._syncer.start()

    def _sync_now_and_then(self) -> None:
        while not self._stop.wait(self.sync_interval):
            with self._sync_lock:
                if self._fd is not None and self._synced < self._written:
                    target = self._written
                    os.fdatasync(self._fd)
                    self._synced = target

    def append(self, records: list[bytes]) -> None:
        """Write ``records`` (``encode``d); with ``fsync``, durable when this returns."""
        with self._write_lock:
            end = self.write(records)
        self.sync(end)

    def locked(self) -> threading.Lock:
        """Held while capturing state and ``write``-ing it: records follow the state's order."""
        return self._write_lock

    def write(self, records: list[bytes]) -> int:
        """Append ``records`` (caller holds ``locked()``); returns the end offset for ``sync``.

        Written with ``os.write`` (no buffer in this process): once this returns, the records
        survive the death of the process; ``sync`` makes them survive the machine's.
        """
        if self._fd is None:
            raise JournalError("the journal is closed")
        if records:
            view = memoryview(b"".join(records))
            while view:
                view = view[os.write(self._fd, view) :]
            self._written += sum(len(r) for r in records)
        return self._written

    def sync(self, upto: int) -> None:
        """fsync (when configured) up to ``upto``; concurrent callers share one (group commit)."""
        if not self.fsync:
            return
        with self._sync_lock:
            if self._fd is None or self._synced >= upto:
                return  # another caller's fsync covered these bytes
            target = self._written  # at least ``upto``: what was written before this call
            os.fdatasync(self._fd)
            self._synced = target

    def close(self) -> None:
        self._stop.set()
        with self._write_lock, self._sync_lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the folder
                self._lock_fd = None


def _damaged(path: Path, offset: int) -> str:
    return (
        f"the local lake journal {path} is damaged at byte {offset}; move the folder "
        f"{path.parent} away to start moto with an empty lake"
    )


def _decode(data: bytes, path: Path, offset: int) -> tuple[dict[str, Any], bytes]:
    """One record read back for replay (checked again: the file may have changed since)."""
    magic, crc, head_len, body_len = FRAME.unpack_from(data)
    head = data[FRAME.size : FRAME.size + head_len]
    body = data[FRAME.size + head_len : FRAME.size + head_len + body_len]
    if magic != MAGIC or zlib.crc32(body, zlib.crc32(head)) != crc:
        raise JournalError(_damaged(path, offset))
    return orjson.loads(head), body


def _records(src: Any, path: Path) -> Iterator[tuple[int, dict[str, Any], int]]:
    """(offset, header, framed length) of each whole record; JournalError at a bad one."""
    offset = 0
    while True:
        frame = src.read(FRAME.size)
        if not frame:
            return
        if len(frame) < FRAME.size:
            raise JournalError(_damaged(path, offset))
        magic, crc, head_len, body_len = FRAME.unpack(frame)
        if magic != MAGIC:
            raise JournalError(_damaged(path, offset))
        head = src.read(head_len)
        running = zlib.crc32(head)
        remaining = body_len
        while remaining:  # checksum the body without holding a large one in memory
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            running = zlib.crc32(chunk, running)
            remaining -= len(chunk)
        if len(head) < head_len or remaining or running != crc:
            raise JournalError(_damaged(path, offset))
        length = FRAME.size + head_len + body_len
        yield offset, orjson.loads(head), length
        offset += length


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
