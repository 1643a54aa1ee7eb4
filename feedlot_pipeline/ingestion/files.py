"""Streaming parsers for a dropped file: JSON Lines, a JSON array, or CSV, optionally gzip.

A dropped file can be far larger than a Lambda's memory, so nothing here reads a file whole:
records come out in chunks, and what is held at once is one chunk plus one record. A problem
with one record (a line that is not JSON, an array element that is not JSON, a CSV row with the
wrong number of fields, bytes that are not UTF-8, a record above the size limit) never fails the
file: that record is yielded as its text, the way the SNS path keeps an unparseable line, so it
lands and the warehouse asset rejects it with a reason (landed = loaded + rejected).

JSON values are parsed with orjson, as everywhere else in the platform, so a file record and an
SNS record with the same text get the same verdict (NaN/Infinity, integers beyond 64 bits and
nesting deeper than 1024 are not JSON to orjson and become text). A JSON array is split into
elements by a bracket/string scanner over bytes (no recursion, so any nesting depth), and each
element is handed to orjson: a bad element is isolated at the next top-level comma.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = codecs.BOM_UTF8
READ_SIZE = 1 << 16
DEFAULT_CHUNK_RECORDS = 5000
DEFAULT_CHUNK_BYTES = 8 << 20
DEFAULT_MAX_RECORD_BYTES = 1 << 20
KINDS = ("jsonl", "json_array", "csv")

_OUTSIDE = re.compile(rb'[\[\]{},"]')  # what changes the scanner's state outside a string
_INSIDE = re.compile(rb'["\\]')  # ... and inside one
_WS = b" \t\r\n"


class FileFormatError(ValueError):
    """The format asked for is not one this module reads."""


@dataclass
class FileStats:
    """What one parse saw; filled in while the chunks are consumed."""

    kind: str = ""
    gzip: bool = False
    records: int = 0  # every value yielded, text ones included
    unparsed: int = 0  # values yielded as text because they were not a record
    oversize: int = 0  # records above the size limit (yielded as a text marker)
    bytes_read: int = 0  # decompressed bytes
    notes: list[str] = field(default_factory=list)


class _Source(io.RawIOBase):
    """Any object with ``read(n)`` (a boto3 StreamingBody, a file) as a raw stream to buffer."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


def open_stream(body: Any) -> tuple[io.BufferedReader, bool]:
    """A peekable binary stream of the file's content and whether it was gzip (by magic bytes)."""
    buffered = io.BufferedReader(_Source(body), READ_SIZE)
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        gz = gzip.GzipFile(fileobj=buffered, mode="rb")
        return io.BufferedReader(gz, READ_SIZE), True  # type: ignore[arg-type]
    return buffered, False


def detect_kind(stream: io.BufferedReader, name: str = "", content_type: str = "") -> str:
    """jsonl, json_array or csv, from the name (after any .gz) and then the first bytes.

    A ``.csv`` name or a ``text/csv`` content type means CSV. Otherwise content decides: an
    opening ``[`` is a JSON array, an opening ``{`` JSON Lines; anything else is CSV when its
    first line has a comma, else JSON Lines (whose bad lines are kept as text).
    """
    lower = name.lower()
    for suffix in (".gz", ".gzip"):
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    if lower.endswith((".csv", ".tsv")) or "csv" in content_type.lower():
        return "csv"
    head = stream.peek(READ_SIZE)[:READ_SIZE]
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM) :]
    stripped = head.lstrip(_WS)
    if stripped.startswith(b"["):
        return "json_array"
    if stripped.startswith(b"{") or lower.endswith((".json", ".jsonl", ".ndjson")):
        return "jsonl"
    first_line = stripped.split(b"\n", 1)[0]
    return "csv" if b"," in first_line else "jsonl"


def iter_chunks(
    body: Any,
    name: str = "",
    *,
    content_type: str = "",
    kind: str | None = None,
    chunk_records: int = DEFAULT_CHUNK_RECORDS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    stats: FileStats | None = None,
) -> Iterator[list[Any]]:
    """Lists of at most ``chunk_records`` values (and about ``chunk_bytes``) of one file.

    Deterministic: the same bytes and limits give the same chunks, which is what lets a caller
    key each chunk's landing by its index.
    """
    st = stats if stats is not None else FileStats()
    stream, st.gzip = open_stream(body)
    st.kind = kind or detect_kind(stream, name, content_type)
    if st.kind not in KINDS:
        raise FileFormatError(f"unknown file kind {st.kind!r}; known: {KINDS}")
    values = {"jsonl": _jsonl, "json_array": _json_array, "csv": _csv}[st.kind](
        _Counted(stream, st), max_record_bytes, st
    )
    chunk: list[Any] = []
    size = 0
    for value, nbytes in values:
        st.records += 1
        chunk.append(value)
        size += nbytes
        if len(chunk) >= chunk_records or size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class _Counted:
    """The decompressed stream, counting bytes read (the stats, and a check on memory use)."""

    def __init__(self, stream: io.BufferedReader, stats: FileStats) -> None:
        self._stream = stream
        self._stats = stats

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self._stats.bytes_read += len(data)
        return data

    def readline(self, limit: int) -> bytes:
        data = self._stream.readline(limit)
        self._stats.bytes_read += len(data)
        return data


# --- text values for what is not a record ------------------------------------------------------


def _text(data: bytes) -> str:
    """A raw fragment as text; bytes that are not UTF-8 show as ``\\xff`` escapes."""
    return data.decode("utf-8", "backslashreplace")


def _oversize(head: bytes, size: int, limit: int, stats: FileStats) -> tuple[str, int]:
    stats.oversize += 1
    stats.unparsed += 1
    marker = (
        f"<record of {size} bytes exceeds the {limit}-byte limit; first bytes: {_text(head[:200])}>"
    )
    return marker, len(marker)


def _parsed(data: bytes, stats: FileStats) -> tuple[Any, int]:
    """orjson's value of one record's bytes, or its text when orjson refuses it."""
    try:
        return orjson.loads(data), len(data)
    except orjson.JSONDecodeError:
        stats.unparsed += 1
        return _text(data), len(data)


# --- JSON Lines --------------------------------------------------------------------------------


def _read_line(stream: _Counted, limit: int) -> tuple[bytes, int] | None:
    """The next line (without its newline) and its full length; the line is cut at ``limit``.

    None at the end of the stream. An overlong line is consumed to its end but not kept.
    """
    line = stream.readline(limit + 1)
    if not line:
        return None
    size = len(line)
    if len(line) > limit and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(READ_SIZE)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        return line[:limit], size
    return line.rstrip(b"\r\n"), size


def _depth(data: bytes, depth: int = 0, in_string: bool = False) -> tuple[int, bool, int]:
    """Bracket depth and string state after ``data``; also how many top-level values closed."""
    pos = 0
    closed = 0
    end = len(data)
    while pos < end:
        if in_string:
            m = _INSIDE.search(data, pos)
            if m is None:
                return depth, True, closed
            if data[m.start()] == 0x5C:  # backslash: skip the escaped byte
                pos = m.end() + 1
                continue
            in_string = False
            pos = m.end()
            continue
        m = _OUTSIDE.search(data, pos)
        if m is None:
            break
        c = data[m.start()]
        pos = m.end()
        if c == 0x22:  # "
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
        elif c in (0x5D, 0x7D):  # ] }
            depth -= 1
            if depth == 0:
                closed += 1
    return depth, in_string, closed


def _split_concatenated(line: bytes) -> list[bytes] | None:
    """``{…}{…}`` (records written without a newline between them) as separate values."""
    parts: list[bytes] = []
    depth, in_string, start, pos = 0, False, 0, 0
    while pos < len(line):
        if in_string:
            m = _INSIDE.search(line, pos)
            if m is None:
                return None
            if line[m.start()] == 0x5C:
                pos = m.end() + 1
                continue
            in_string, pos = False, m.end()
            continue
        m = _OUTSIDE.search(line, pos)
        if m is None:
            break
        c = line[m.start()]
        pos = m.end()
        if c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            if depth == 0 and line[start : m.start()].strip(_WS):
                return None  # something other than whitespace between values
            if depth == 0:
                start = m.start()
            depth += 1
        elif c in (0x5D, 0x7D):
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                parts.append(line[start:pos])
                start = pos
    if depth != 0 or in_string or line[start:].strip(_WS) or len(parts) < 2:
        return None
    return parts


def _jsonl(stream: _Counted, limit: int, stats: FileStats) -> Iterator[tuple[Any, int]]:
    """One value per line; a value spread over several lines (pretty-printed JSON) is joined."""
    first = True
    pushed: tuple[bytes, int] | None = None
    while True:
        got, pushed = (pushed, None) if pushed is not None else (_read_line(stream, limit), None)
        if got is None:
            return
        line, size = got
        if first:
            first = False
            if line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
        if size > limit + 2:
            yield _oversize(line, size, limit, stats)
            continue
        if not line.strip(_WS):
            continue
        try:
            yield orjson.loads(line), size
            continue
        except orjson.JSONDecodeError:
            pass
        parts = _split_concatenated(line)
        if parts is not None:
            for part in parts:
                yield _parsed(part, stats)
            continue
        depth, in_string, _ = _depth(line)
        if line.lstrip(_WS)[:1] in (b"{", b"[") and (depth > 0 or in_string):
            value, pushed = _joined_value(stream, line, size, depth, in_string, limit, stats)
            yield value
            continue
        stats.unparsed += 1
        yield _text(line), size


def _is_record_line(line: bytes) -> bool:
    if not line.lstrip(_WS).startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _joined_value(
    stream: _Counted,
    line: bytes,
    size: int,
    depth: int,
    in_string: bool,
    limit: int,
    stats: FileStats,
) -> tuple[tuple[Any, int], tuple[bytes, int] | None]:
    """Lines joined until the value that ``line`` opens closes; also a line read too far.

    A following line that is a whole JSON object on its own ends the join: ``line`` was a
    truncated record, not the start of pretty-printed JSON, and must not swallow good records.
    The join also stops at the size limit (the value is then reported as too big).
    """
    parts = [line]
    total = size
    while depth > 0 or in_string:
        got = _read_line(stream, limit)
        if got is None:
            break
        more, more_size = got
        if _is_record_line(more):
            stats.unparsed += 1
            return (_text(b"\n".join(parts)), total), got
        total += more_size
        if total > limit:
            depth, in_string, _ = _depth(more, depth, in_string)
            while depth > 0 or in_string:
                got = _read_line(stream, limit)
                if got is None:
                    break
                total += got[1]
                depth, in_string, _ = _depth(got[0], depth, in_string)
            return _oversize(b"\n".join(parts), total, limit, stats), None
        parts.append(more)
        depth, in_string, _ = _depth(more, depth, in_string)
    return _parsed(b"\n".join(parts), stats), None


# --- JSON array --------------------------------------------------------------------------------


def _json_array(stream: _Counted, limit: int, stats: FileStats) -> Iterator[tuple[Any, int]]:
    """Elements of a top-level JSON array, split by a scanner and parsed one by one.

    Held in memory: the unconsumed tail of the last read plus the current element (at most
    ``limit`` bytes; a longer element is skipped to its end and reported as too big).
    """
    buf = stream.read(READ_SIZE)
    if buf.startswith(UTF8_BOM):
        buf = buf[len(UTF8_BOM) :]
    # Skip to the opening bracket (detect_kind saw only whitespace before it).
    while True:
        stripped = buf.lstrip(_WS)
        if stripped or not buf:
            break
        buf = stream.read(READ_SIZE)
    buf = stripped[1:] if stripped.startswith(b"[") else stripped
    pos = 0
    start = 0
    depth = 0
    in_string = False
    skipped = 0  # bytes of an oversize element already dropped
    head = b""  # first bytes of an oversize element, for its marker
    eof = False
    ended = False
    while not ended:
        if in_string:
            m = _INSIDE.search(buf, pos)
            if m is not None and buf[m.start()] == 0x5C and m.end() >= len(buf) and not eof:
                pos, m = m.start(), None  # the escaped byte is in the next read
        else:
            m = _OUTSIDE.search(buf, pos)
        if m is None:
            if eof:
                break
            if pos < len(buf) and buf[pos] != 0x5C:
                pos = len(buf)  # nothing of interest up to the end of what is read
            # Need more bytes: drop what is consumed, enforce the element limit, read on.
            if skipped or len(buf) - start > limit:
                if not skipped:
                    head = buf[start : start + 200]
                skipped += pos - start  # keep buf[pos:]: it may end inside an escape
                buf, pos, start = buf[pos:], 0, 0
            elif start > 0:
                buf, pos, start = buf[start:], pos - start, 0
            more = stream.read(READ_SIZE)
            if not more:
                eof = True
                continue
            buf += more
            continue
        c = buf[m.start()]
        if in_string:
            if c == 0x5C:
                pos = m.end() + 1
                continue
            in_string = False
            pos = m.end()
            continue
        pos = m.end()
        if c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
        elif c in (0x5D, 0x7D) and depth > 0:
            depth -= 1
        elif (c == 0x2C and depth == 0) or c == 0x5D:  # a top-level ',' or the closing ']'
            element = buf[start : m.start()]
            if skipped:
                size = skipped + len(element)
                yield _oversize(head, size, limit, stats)
                skipped, head = 0, b""
            elif element.strip(_WS) or c == 0x2C:
                yield _element(element, limit, stats)
            start = pos
            ended = c == 0x5D
    if not ended:
        # The array never closed (truncated file, an unclosed string): keep what is left as text.
        tail = buf[start:]
        if skipped:
            yield _oversize(head, skipped + len(tail), limit, stats)
        elif tail.strip(_WS):
            stats.notes.append("the JSON array is not closed")
            yield _element(tail, limit, stats)
        return
    trailing = (buf[pos:] + stream.read(limit)).strip(_WS)
    if trailing:
        stats.notes.append("content after the closing ']'")
        stats.unparsed += 1
        yield _text(trailing[:limit]), len(trailing)


def _element(data: bytes, limit: int, stats: FileStats) -> tuple[Any, int]:
    stripped = data.strip(_WS)
    if len(stripped) > limit:
        return _oversize(stripped, len(stripped), limit, stats)
    return _parsed(stripped, stats)


# --- CSV ---------------------------------------------------------------------------------------


class _Lines:
    """Decoded lines for csv.reader, remembering the raw bytes of the row being read."""

    def __init__(self, stream: _Counted, limit: int, stats: FileStats) -> None:
        self._stream = stream
        self._limit = limit
        self._stats = stats
        self.raw: list[bytes] = []
        self.oversize: list[tuple[bytes, int]] = []
        self._first = True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        got = _read_line(self._stream, self._limit)
        if got is None:
            raise StopIteration
        line, size = got
        if self._first:
            self._first = False
            if line.startswith(UTF8_BOM):
                line = line[len(UTF8_BOM) :]
        if size > self._limit + 2:
            self.oversize.append((line, size))
            line = b""
        self.raw.append(line)
        return line.decode("utf-8", "surrogateescape") + "\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _csv(stream: _Counted, limit: int, stats: FileStats) -> Iterator[tuple[Any, int]]:
    """A dict per row keyed by the header row; values stay strings.

    A row with another number of fields than the header, or with bytes that are not UTF-8, is
    yielded as its raw text.
    """
    lines = _Lines(stream, limit, stats)
    header: list[str] | None = None
    while True:
        lines.raw = []
        try:
            row = next(_reader(lines))
        except StopIteration:
            return
        except csv.Error as err:
            # A field above csv's limit (an unclosed quote): keep the lines read as text.
            stats.notes.append(f"csv: {err}")
            raw = b"\n".join(lines.raw)
            stats.unparsed += 1
            yield _text(raw[:limit]), len(raw)
            continue
        raw = b"\n".join(lines.raw)
        if lines.oversize:
            line, size = lines.oversize.pop()
            lines.oversize.clear()
            yield _oversize(line, size, limit, stats)
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            if any(_SURROGATE.search(cell) for cell in header):
                stats.notes.append("csv header is not UTF-8")
            continue
        if len(row) != len(header) or any(_SURROGATE.search(cell) for cell in row):
            stats.unparsed += 1
            yield _text(raw), len(raw)
            continue
        yield dict(zip(header, row, strict=True)), len(raw)


def _reader(lines: Iterable[str]) -> Iterator[list[str]]:
    """A csv reader per row, so a csv.Error on one row leaves the next row readable."""
    return csv.reader(lines)


def read_all(data: bytes, name: str = "", **kwargs: Any) -> list[Any]:
    """Every value of an in-memory file (tests and small tools)."""
    out: list[Any] = []
    for chunk in iter_chunks(io.BytesIO(data), name, **kwargs):
        out.extend(chunk)
    return out


def open_local(path: str) -> IO[bytes]:
    """A local file opened for ``iter_chunks``."""
    return open(path, "rb")  # noqa: SIM115 - the caller closes it
