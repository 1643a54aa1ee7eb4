"""Streaming parsers of dropped files: formats, gzip, per-record problems, bounded reads."""

from __future__ import annotations

import gzip
import io

import orjson
import pytest

from feedlot_pipeline.ingestion.files import FileStats, iter_chunks, read_all
from feedlot_pipeline_tests.helpers import record


class CountingBody:
    """A body that counts what the parser has read so far (a boto3 StreamingBody stand-in)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._data.read(n)
        self.read_bytes += len(chunk)
        return chunk


def test_json_lines_keep_bad_lines_as_text() -> None:
    data = b'\xef\xbb\xbf{"a":1}\r\n\nnot json\n{"b":2}\n[1,2]\n\xff\xfe bytes\n'
    stats = FileStats()
    assert read_all(data, "x.jsonl", stats=stats) == [
        {"a": 1},
        "not json",
        {"b": 2},
        [1, 2],
        "\\xff\\xfe bytes",
    ]
    assert (stats.kind, stats.records, stats.unparsed) == ("jsonl", 5, 2)


def test_orjson_verdicts_match_the_sns_path() -> None:
    """NaN/Infinity are not JSON to orjson (text); a huge integer is a float, as via SNS."""
    data = b'{"x": NaN}\n{"x": Infinity}\n{"x": 123456789012345678901234567890}\n{"x": 1.5}\n'
    assert read_all(data, "x.jsonl") == [
        '{"x": NaN}',
        '{"x": Infinity}',
        {"x": 1.2345678901234568e29},
        {"x": 1.5},
    ]


def test_pretty_printed_and_concatenated_json() -> None:
    pretty = orjson.dumps(record(), option=orjson.OPT_INDENT_2)
    assert read_all(pretty, "one.json") == [record()]
    # Firehose-style records without a newline between them.
    assert read_all(b'{"a":1}{"a":2} {"a":3}\n', "firehose-object") == [
        {"a": 1},
        {"a": 2},
        {"a": 3},
    ]
    # A truncated record does not swallow the good records after it.
    assert read_all(b'{"a": 1\n{"b": 2}\n{"c": 3}\n') == ['{"a": 1', {"b": 2}, {"c": 3}]


def test_json_array_elements_are_isolated() -> None:
    data = b' \n[ {"a": "x,]}\\"y"}, 1, NaN, {"b": [[[]]]}, {bad}, "s", {"c": "\\\\"} ]\n'
    stats = FileStats()
    values = read_all(data, "x.json", stats=stats)
    assert values == [
        {"a": 'x,]}"y'},
        1,
        "NaN",
        {"b": [[[]]]},
        "{bad}",
        "s",
        {"c": "\\"},
    ]
    assert (stats.kind, stats.unparsed) == ("json_array", 2)
    assert read_all(b"[]") == read_all(b"  [ ]  ") == read_all(b"") == []


def test_deep_nesting_does_not_break_the_array() -> None:
    deep = b"[" + b"[" * 5000 + b"]" * 5000 + b', {"ok": 1}]'
    values = read_all(deep, "deep.json")
    assert isinstance(values[0], str) and values[1] == {"ok": 1}  # orjson refuses > 1024 levels


def test_unclosed_array_and_trailing_garbage_are_kept() -> None:
    stats = FileStats()
    assert read_all(b'[{"a":1}, {"b":', stats=stats) == [{"a": 1}, '{"b":']
    assert stats.notes == ["the JSON array is not closed"]
    assert read_all(b'[{"a":1}] junk') == [{"a": 1}, "junk"]


def test_json_array_is_streamed_not_loaded_whole() -> None:
    records = [record(lote=str(i)) for i in range(30_000)]  # ~7.5 MB
    data = orjson.dumps(records)
    body = CountingBody(data)
    chunks = iter_chunks(body, "big.json", chunk_records=1000)
    first = next(chunks)
    assert len(first) == 1000 and first[0] == records[0]
    assert body.read_bytes < 1_000_000 < len(data)  # read ~ one chunk ahead, not the file
    rest = [r for chunk in chunks for r in chunk]
    assert len(rest) == 29_000 and rest[-1] == records[-1]


@pytest.mark.parametrize("kind", ["jsonl", "json_array", "csv"])
def test_oversize_record_is_reported_and_skipped(kind: str) -> None:
    huge = "x" * 5000
    if kind == "jsonl":
        data = orjson.dumps({"a": huge}) + b'\n{"b":1}\n'
    elif kind == "json_array":
        data = b'[{"a": "' + huge.encode() + b'"}, {"b":1}]'
    else:
        data = b"a,b\n" + huge.encode() + b",1\n2,3\n"
    stats = FileStats()
    values = read_all(
        data, f"f.{'csv' if kind == 'csv' else 'json'}", max_record_bytes=1000, stats=stats
    )
    assert len(values) == 2 and stats.oversize == 1
    assert values[0].startswith("<record of ") and "exceeds the 1000-byte limit" in values[0]
    assert values[1] in ({"b": 1}, {"a": "2", "b": "3"})


def test_csv_rows_are_dicts_of_strings_and_bad_rows_text() -> None:
    data = (
        b"\xef\xbb\xbfid_lote, cod_cliente ,peso_medio\r\n"
        b'1,FazendaUm,"360,5"\r\n'
        b"2,FazendaUm\r\n"
        b'3,"multi\nline",1\r\n'
        b"\r\n"
        b"4,Fazenda\xff,2\r\n"
    )
    stats = FileStats()
    assert read_all(data, "drop.csv", stats=stats) == [
        {"id_lote": "1", "cod_cliente": "FazendaUm", "peso_medio": "360,5"},
        "2,FazendaUm",
        {"id_lote": "3", "cod_cliente": "multi\nline", "peso_medio": "1"},
        "4,Fazenda\\xff,2",
    ]
    assert (stats.kind, stats.unparsed) == ("csv", 2)


def test_gzip_by_magic_bytes_not_by_name() -> None:
    data = b'{"a":1}\n{"a":2}\n'
    stats = FileStats()
    assert read_all(gzip.compress(data), "no-suffix", stats=stats) == [{"a": 1}, {"a": 2}]
    assert stats.gzip
    csv = b"a,b\n1,2\n"
    assert read_all(gzip.compress(csv), "x.csv.gz") == [{"a": "1", "b": "2"}]
    plain = FileStats()
    assert read_all(data, "named.gz", stats=plain) == [{"a": 1}, {"a": 2}]  # not gzip inside
    assert not plain.gzip


def test_kind_detection() -> None:
    assert FileStats().kind == ""
    for data, name, kind in [
        (b"a,b\n1,2\n", "noext", "csv"),
        (b'[{"a":1}]', "x.jsonl", "json_array"),
        (b'{"a":1}', "x.txt", "jsonl"),
        (b"garbage", "x", "jsonl"),
        (b'{"a":1}', "x.csv", "csv"),
    ]:
        stats = FileStats()
        read_all(data, name, stats=stats)
        assert stats.kind == kind, (data, name)


def test_chunks_are_deterministic_and_bounded() -> None:
    data = b"\n".join(orjson.dumps({"i": i}) for i in range(23))
    sizes = [[len(c) for c in iter_chunks(io.BytesIO(data), chunk_records=5)] for _ in range(2)]
    assert sizes == [[5, 5, 5, 5, 3]] * 2
    by_bytes = [len(c) for c in iter_chunks(io.BytesIO(data), chunk_bytes=40)]
    assert max(by_bytes) <= 5 and sum(by_bytes) == 23
