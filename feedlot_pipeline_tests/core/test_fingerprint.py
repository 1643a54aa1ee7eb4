"""``row_fingerprint`` and ``natural_key``: what a reload uses to skip rows stored as-is."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from feedlot_pipeline.core.records import (
    DEFAULT_RULE,
    clean,
    natural_key,
    row_fingerprint,
)
from feedlot_pipeline.tools.synthetic import UNKNOWN_CLIENT, generate

CLIENTS = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}
NOW = datetime(2023, 1, 5, 12, 0, tzinfo=timezone.utc)


def test_fingerprint_tells_lines_apart() -> None:
    line = orjson.dumps(next(iter(generate(1, seed=3))))
    fp = row_fingerprint(line)
    assert fp == row_fingerprint(line) == row_fingerprint(line.decode())
    assert 0 <= fp < 2**63  # fits a signed BIGINT
    edited = {
        row_fingerprint(line.replace(b"0", b"1", 1)),  # one digit
        row_fingerprint(line.replace(b'"', b"'", 1)),
        row_fingerprint(line + b" "),  # formatting only: cleaned in full, never wrong
        row_fingerprint(line[:-1]),
    }
    assert fp not in edited and len(edited) == 4


def test_natural_key_is_the_id_clean_gives() -> None:
    records = list(generate(2_000, seed=5, farms=("FazendaUm", "FazendaDois")))
    for raw in records:
        row = clean(raw, CLIENTS, DEFAULT_RULE, "k", NOW)
        assert natural_key(raw, CLIENTS) == (row[0], row[12], row[10].date())
    assert natural_key([1], CLIENTS) is None
    assert natural_key({**records[0], "cod_cliente": UNKNOWN_CLIENT}, CLIENTS) is None
    assert natural_key({**records[0], "data": "yesterday"}, CLIENTS) is None
    assert natural_key({**records[0], "id_lote": 7}, CLIENTS) is None  # clean decides those
