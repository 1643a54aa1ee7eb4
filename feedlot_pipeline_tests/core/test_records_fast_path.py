"""The fast path of ``records.clean`` returns exactly what the checked path does, or defers."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from feedlot_pipeline.core import records
from feedlot_pipeline.core.records import DEFAULT_RULE, RecordError, clean, treated_id
from feedlot_pipeline.tools.synthetic import generate

CLIENTS = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois", " Spaced ": "fazenda_x"}
NOW = datetime(2023, 1, 5, 12, 0, tzinfo=timezone.utc)
BASE = {
    "id_curral": "25994051003275",
    "id_raca": "28551700000020",
    "id_lote": "73578741015010",
    "peso_entrada": 234.941,
    "peso_medio": 360.341,
    "data": "2023-01-01 00:00:00 UTC",
    "quantidade_animais": "51",
    "dia_confinamento": "66",
    "consumo_real": 9.076451,
    "cod_cliente": "FazendaUm",
}
# (field, value) variants at the edges of what each path accepts.
VARIANTS = [
    ("id_curral", "0012"),
    ("id_curral", 25994051003275),
    ("id_curral", "123\n"),
    ("id_curral", "١٢٣"),  # Arabic-Indic digits: str.isdigit() is True, not [0-9]
    ("id_curral", "1" * 33),
    ("id_curral", True),
    ("id_raca", "12a"),
    ("id_lote", ""),
    ("peso_entrada", 0),
    ("peso_entrada", 250),
    ("peso_entrada", "250.5"),
    ("peso_entrada", float("inf")),
    ("peso_entrada", float("nan")),
    ("peso_medio", -1.0),
    ("peso_medio", False),
    ("consumo_real", 0.0),
    ("consumo_real", -0.1),
    ("consumo_real", None),
    ("quantidade_animais", 51),
    ("quantidade_animais", "+51"),
    ("quantidade_animais", " 51 "),
    ("quantidade_animais", "0"),
    ("quantidade_animais", "1234567890"),
    ("quantidade_animais", 51.0),
    ("quantidade_animais", "٥"),
    ("dia_confinamento", "0"),
    ("dia_confinamento", -1),
    ("data", "2023-01-01"),
    ("data", "2023-01-01T03:00:00-03:00"),
    ("data", "2023-01-01 00:00:00"),
    ("data", 20230101),
    ("cod_cliente", " FazendaUm "),
    ("cod_cliente", " Spaced "),
    ("cod_cliente", "FazendaX"),
    ("cod_cliente", "x" * 65),
    ("cod_cliente", ""),
]


def outcome(raw: object) -> tuple | str:
    try:
        return records._clean_checked(raw, CLIENTS, DEFAULT_RULE, "k", NOW)
    except RecordError as err:
        return f"{err.code}: {err.reason}"


@pytest.mark.parametrize(("field", "value"), VARIANTS)
def test_fast_path_agrees_with_checked_path(field: str, value: object) -> None:
    raw = {**BASE, field: value}
    fast = records._clean_usual(copy.deepcopy(raw), CLIENTS, DEFAULT_RULE, "k", NOW)
    expected = outcome(raw)
    if fast is not None:
        assert fast == expected
    try:
        got: tuple | str = clean(raw, CLIENTS, DEFAULT_RULE, "k", NOW)
    except RecordError as err:
        got = f"{err.code}: {err.reason}"
    assert got == expected


def test_fast_path_takes_generated_records_and_agrees() -> None:
    for raw in generate(2_000, seed=11, bad_fraction=0.2):
        result = outcome(raw)
        fast = records._clean_usual(raw, CLIENTS, DEFAULT_RULE, "k", NOW)
        assert fast is None or fast == result
        if isinstance(result, tuple):
            assert fast == result  # every valid generated record goes the fast way


def test_digit_regex_rejects_trailing_newline() -> None:
    with pytest.raises(RecordError, match="digit string"):
        clean({**BASE, "id_lote": "123\n"}, CLIENTS, DEFAULT_RULE, "k", NOW)


def test_treated_id_is_uuid5_of_the_natural_key() -> None:
    namespace = uuid.UUID(bytes=records.ID_NAMESPACE)
    for raw in generate(200, seed=3):
        data = records.parse_data(raw["data"])
        name = f"{raw['cod_cliente']}|{raw['id_lote']}|{raw['id_curral']}|{data:%Y-%m-%dT%H:%M:%S}"
        got = treated_id(raw["cod_cliente"], raw["id_lote"], raw["id_curral"], data)
        assert got == str(uuid.uuid5(namespace, name))


def test_sample_line_cleans_to_the_case_values() -> None:
    line = orjson.dumps(BASE)
    row = clean(records.loads_line(line), CLIENTS, DEFAULT_RULE, "k", NOW)
    as_dict = dict(zip(records.WAREHOUSE_COLUMNS, row, strict=True))
    assert as_dict["id_curral"] == "25994051003275"
    assert as_dict["quantidade_animais"] == 51
    assert as_dict["consumo_meta"] == round(360.341 * 0.0176, 6)
    assert as_dict["fazenda"] == "fazenda_um"
    assert as_dict["data"] == datetime(2023, 1, 1, tzinfo=timezone.utc)
