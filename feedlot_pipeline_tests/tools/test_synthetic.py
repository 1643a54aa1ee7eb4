"""Synthetic records: deterministic, unique natural key, the case's shape, breakable."""

from __future__ import annotations

import collections
from datetime import date, datetime, timezone

import orjson

from feedlot_pipeline.core.records import DEFAULT_RULE, RecordError, clean
from feedlot_pipeline.tools.synthetic import BREAKAGES, generate, write_jsonl

CLIENTS = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}
NOW = datetime(2023, 1, 5, tzinfo=timezone.utc)


def test_deterministic_for_a_seed() -> None:
    assert list(generate(500, seed=5)) == list(generate(500, seed=5))
    assert list(generate(500, seed=5)) != list(generate(500, seed=6))


def test_shape_of_the_case() -> None:
    records = list(generate(3_000, seed=1))
    assert len(records) == 3_000
    first = records[0]
    assert set(first) == {
        "id_curral",
        "id_raca",
        "id_lote",
        "peso_entrada",
        "peso_medio",
        "data",
        "quantidade_animais",
        "dia_confinamento",
        "consumo_real",
        "cod_cliente",
    }
    for r in records:
        assert r["id_curral"].isdigit() and len(r["id_curral"]) == 14
        assert r["id_lote"].isdigit() and len(r["id_lote"]) in (14, 15)
        assert r["quantidade_animais"].isdigit() and r["dia_confinamento"].isdigit()
        assert r["data"].endswith(" 00:00:00 UTC")
        assert 0.013 <= r["consumo_real"] / r["peso_medio"] <= 0.028
        assert r["peso_medio"] > r["peso_entrada"] - 2
    keys = {(r["cod_cliente"], r["id_lote"], r["id_curral"], r["data"]) for r in records}
    assert len(keys) == len(records)
    assert {r["cod_cliente"] for r in records} == set(CLIENTS)
    assert len({r["data"] for r in records}) > 1


def test_pens_keep_their_lot_and_grow() -> None:
    by_pen = collections.defaultdict(list)
    for r in generate(2_000, seed=2):
        by_pen[r["id_curral"]].append(r)
    series = next(iter(by_pen.values()))
    assert len(series) > 2
    same_lot = [r for r in series if r["id_lote"] == series[0]["id_lote"]]
    days = [int(r["dia_confinamento"]) for r in same_lot]
    assert days == sorted(days) and len(set(days)) == len(days)


def test_every_clean_record_loads_and_bad_ones_are_rejected_in_varied_ways() -> None:
    assert all(clean(r, CLIENTS, DEFAULT_RULE, "k", NOW) for r in generate(1_000))
    codes: collections.Counter[str] = collections.Counter()
    for r in generate(4_000, seed=9, bad_fraction=0.25):
        try:
            clean(r, CLIENTS, DEFAULT_RULE, "k", NOW)
        except RecordError as err:
            codes[err.code] += 1
    assert set(codes) == set(BREAKAGES.values())
    assert 800 <= sum(codes.values()) <= 1_200


def test_other_farms_and_start(tmp_path) -> None:
    records = list(generate(50, farms=("FazendaTres",), start=date(2024, 2, 28)))
    assert {r["cod_cliente"] for r in records} == {"FazendaTres"}
    assert records[0]["data"] == "2024-02-28 00:00:00 UTC"


def test_write_jsonl_streams_the_same_records(tmp_path) -> None:
    path = write_jsonl(tmp_path / "sub" / "r.jsonl", 1_234, seed=4)
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == list(generate(1_234, seed=4))
