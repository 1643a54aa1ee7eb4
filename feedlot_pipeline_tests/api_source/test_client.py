"""The fetching rules that need no server: backoff, Retry-After, redaction, paths, schema."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from feedlot_pipeline.api_source.client import (
    FetchSpec,
    SchemaTracker,
    fetch_to_jsonl,
    json_path,
    parse_retry_after,
    redact_url,
    retry_delay,
    scrub,
)
from feedlot_pipeline_tests.api_source.server import Reply, serve


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    lows = [retry_delay(a, 1.0, 100.0, rng=lambda lo, hi: lo) for a in range(4)]
    highs = [retry_delay(a, 1.0, 100.0, rng=lambda lo, hi: hi) for a in range(4)]
    assert lows == [0.5, 1.0, 2.0, 4.0]
    assert highs == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(20, 1.0, 30.0) <= 30.0


def test_retry_after_is_honoured_but_capped() -> None:
    assert retry_delay(0, 0.01, 10.0, "3") == 3.0
    assert retry_delay(0, 0.01, 2.0, "3600") == 2.0  # a hostile Retry-After cannot stall a run
    assert retry_delay(0, 0.01, 10.0, "not a date") < 0.02
    later = datetime.now(timezone.utc) + timedelta(seconds=5)
    assert 3.0 < parse_retry_after(format_datetime(later, usegmt=True)) <= 5.0
    assert parse_retry_after("-4") == 0.0


def test_redaction_hides_credentials_in_urls_and_text() -> None:
    url = "https://user:pw@api.example.com/v1/x?api_key=S3CRET&page=2&token=T0K&q=ok"
    shown = redact_url(url)
    assert "S3CRET" not in shown and "T0K" not in shown and "pw" not in shown
    assert "page=2" in shown and "q=ok" in shown and shown.startswith("https://api.example.com/")
    assert redact_url("http://h/x?q=hunter2", ["hunter2"]) == "http://h/x?q=***"
    assert scrub("got Bearer abc123 back", ["abc123"]) == "got Bearer *** back"


def test_json_path() -> None:
    body = {"data": [1, 2], "links": {"next": "/p2"}, "items": [{"a": 1}]}
    assert json_path(body, "data") == [1, 2]
    assert json_path(body, "links.next") == "/p2"
    assert json_path(body, "items.0.a") == 1
    assert json_path(body, "missing.x") is None
    assert json_path([3], "") == [3]


def test_schema_tracks_types_per_field() -> None:
    schema = SchemaTracker()
    for record in [{"a": 1, "b": "x"}, {"a": 1.5, "b": None, "c": True}, {"a": [1], "d": {}}]:
        schema.observe(record)
    assert schema.as_dict() == {
        "a": ["array", "integer", "number"],
        "b": ["null", "string"],
        "c": ["boolean"],
        "d": ["object"],
    }
    assert "| a | array, integer, number | 3/3 |" in schema.markdown()
    scalars = SchemaTracker()
    scalars.observe("text")
    assert scalars.as_dict() == {"$": ["string"]}


@pytest.mark.parametrize("bad", [{"pagination": "cursor"}, {"url": "file:///etc/passwd"}])
def test_spec_rejects_unknown_modes_and_schemes(bad: dict) -> None:
    with pytest.raises(ValueError):
        FetchSpec(**{"url": "http://127.0.0.1/x", **bad})


def test_spec_masks_the_auth_header_value_and_the_bare_credential() -> None:
    spec = FetchSpec(
        url="http://127.0.0.1:9/x",
        headers={"Authorization": "Bearer tok", "Accept": "application/json"},
        sensitive_headers=("authorization",),
        secret_values=("tok",),
    )
    assert spec.secrets == ("Bearer tok", "tok")
    in_url = FetchSpec(url="http://127.0.0.1:9/x?api_key=abcdef&page=1")
    assert in_url.secrets == ("abcdef",)


def test_records_stream_to_utf8_json_lines(tmp_path: Path) -> None:
    body = b'{"data": [{"nome": "ra\\u00e7\\u00e3o"}, {"odd": "\\ud800"}, 7, [1, 2]]}'
    with serve(lambda req, n: Reply(body=body)) as server:
        out = tmp_path / "out.jsonl"
        with out.open("wb") as fh:
            result = fetch_to_jsonl(FetchSpec(url=server.url, records_path="data"), fh)
    lines = out.read_bytes().splitlines()
    assert lines == ['{"nome":"ração"}'.encode(), b'{"odd":"\\ud800"}', b"7", b"[1,2]"]
    assert (result.records, result.pages, result.requests) == (4, 1, 1)
    assert result.bytes == out.stat().st_size
