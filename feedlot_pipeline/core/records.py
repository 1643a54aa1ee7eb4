"""Domain rules for one consumption record: parse, validate, route, enrich.

Every path that touches records (the landing Lambdas, the warehouse asset, the bulk loader and the
benchmark) calls these functions, so a rule changes in one place. The hot path (``clean``) avoids
per-record object churn because the bulk load runs it a million times.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from zlib import adler32 as _adler32
from zlib import crc32 as _crc32

import orjson

# Fields of a record as farms send them (seed 001).
ID_FIELDS = ("id_curral", "id_raca", "id_lote")
FLOAT_FIELDS = ("peso_entrada", "peso_medio", "consumo_real")
INT_FIELDS = ("quantidade_animais", "dia_confinamento")
REQUIRED_FIELDS = (*ID_FIELDS, *FLOAT_FIELDS, *INT_FIELDS, "data", "cod_cliente")

# Columns of historico_consumo, in the order rows are produced and COPYed.
WAREHOUSE_COLUMNS = (
    "id_treated_data",
    "id_curral",
    "id_raca",
    "id_lote",
    "peso_entrada",
    "peso_medio",
    "quantidade_animais",
    "dia_confinamento",
    "consumo_real",
    "consumo_meta",
    "data",
    "cod_cliente",
    "fazenda",
    "regra_consumo_meta",
    "raw_object_key",
    "row_ts",
    "correlation_id",
    "row_fp",
    "landed_at",
    "raw_line_no",
)
# Positions of the columns a rule needs by name (rows are tuples on the hot path).
COL = {name: i for i, name in enumerate(WAREHOUSE_COLUMNS)}
ID, DATA, FAZENDA = COL["id_treated_data"], COL["data"], COL["fazenda"]

# Namespace of id_treated_data: fixed forever, or every id changes.
ID_NAMESPACE = bytes.fromhex("6f1d6e2a9c3b5d4e8a7f0b1c2d3e4f50")

UNROUTED_FARM = "_unrouted"
_DIGITS = re.compile(r"[0-9]{1,32}")  # fullmatch: "$" would accept a trailing newline
_INT_TEXT = re.compile(r"[+]?[0-9]{1,9}")  # fullmatch
_MAX_TEXT = 64


class RecordError(ValueError):
    """A record that cannot be loaded; ``code`` is stable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- consumo_meta rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumoMetaRule:
    """Target intake as a function of the record; ``name`` is stored with every row."""

    name: str
    description: str
    compute: Callable[[float, float, int], float]  # (peso_medio, peso_entrada, dia) -> kg/day

    def __call__(self, peso_medio: float, peso_entrada: float, dia_confinamento: int) -> float:
        return self.compute(peso_medio, peso_entrada, dia_confinamento)


RULES: dict[str, ConsumoMetaRule] = {}


def register_rule(rule: ConsumoMetaRule) -> ConsumoMetaRule:
    """Add a consumo_meta rule so it can be chosen by name (FEEDLOT_CONSUMO_META_RULE)."""
    RULES[rule.name] = rule
    return rule


DEFAULT_RULE = register_rule(
    ConsumoMetaRule(
        name="peso_medio_pct_1_76",
        description="consumo_meta = peso_medio × 1.76 % (the case brief)",
        compute=lambda peso_medio, _peso_entrada, _dia: round(peso_medio * 0.0176, 6),
    )
)


def get_rule(name: str) -> ConsumoMetaRule:
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"unknown consumo_meta rule {name!r}; known: {sorted(RULES)}") from None


# --- field parsing -----------------------------------------------------------------------------

_DATE_CACHE: dict[str, datetime] = {}


def parse_data(value: Any) -> datetime:
    """Parse the record's ``data`` into an aware UTC datetime.

    Accepts the case's ``"2023-01-01 00:00:00 UTC"``, ISO 8601 with an offset or ``Z`` (converted
    to UTC), and a bare ``YYYY-MM-DD``. A naive timestamp without ``UTC`` is ambiguous and rejected.
    """
    if not isinstance(value, str):
        raise RecordError("invalid_data", f"data must be a string, got {type(value).__name__}")
    cached = _DATE_CACHE.get(value)
    if cached is not None:
        return cached
    text = value.strip()
    try:
        if text.endswith(" UTC"):
            parsed = datetime.fromisoformat(text[:-4]).replace(tzinfo=timezone.utc)
        elif len(text) == 10:
            parsed = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise RecordError(
                    "invalid_data", f"data {value[:40]!r} has no time zone (expected '… UTC')"
                )
            parsed = parsed.astimezone(timezone.utc)
    except RecordError:
        raise
    except ValueError:
        raise RecordError("invalid_data", f"data {value[:40]!r} is not a date") from None
    if len(_DATE_CACHE) < 100_000:
        _DATE_CACHE[value] = parsed
    return parsed


def _id(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name)
    if isinstance(value, bool):
        raise RecordError("invalid_id", f"{name} must be a digit string, got a boolean")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        shown = repr(value)[:40]
        raise RecordError("invalid_id", f"{name} must be a digit string, got {shown}")
    return value


def _float(record: Mapping[str, Any], name: str) -> float:
    value = record.get(name)
    if isinstance(value, bool):
        raise RecordError("invalid_number", f"{name} must be a number, got a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise RecordError("invalid_number", f"{name} is not a number: {value[:40]!r}") from None
    else:
        raise RecordError("invalid_number", f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise RecordError("invalid_number", f"{name} is not finite: {value!r}")
    return number


def _int(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    if isinstance(value, bool):
        raise RecordError("invalid_number", f"{name} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    raise RecordError("invalid_number", f"{name} must be an integer, got {repr(value)[:40]}")


def _client(record: Mapping[str, Any]) -> str:
    value = record.get("cod_cliente")
    if not isinstance(value, str) or not value.strip():
        raise RecordError("missing_field", "cod_cliente is missing or empty")
    if len(value) > _MAX_TEXT:
        raise RecordError("invalid_client", f"cod_cliente longer than {_MAX_TEXT} characters")
    return value.strip()


def _missing(record: Mapping[str, Any]) -> None:
    absent = [f for f in REQUIRED_FIELDS if record.get(f) is None or record.get(f) == ""]
    if absent:
        raise RecordError("missing_field", f"missing required field(s): {', '.join(absent)}")


# --- identity and routing ----------------------------------------------------------------------


_STAMP_CACHE: dict[datetime, str] = {}
_ID_HASH = hashlib.sha1(ID_NAMESPACE)  # copied per id: the namespace is hashed once
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def treated_id(cod_cliente: str, id_lote: str, id_curral: str, data: datetime) -> str:
    """Deterministic UUIDv5 of the natural key (client, lot, pen, timestamp).

    Same as ``uuid.uuid5(uuid.UUID(bytes=ID_NAMESPACE), name)`` without building UUID objects,
    which matters at a million records.
    """
    stamp = _STAMP_CACHE.get(data)
    if stamp is None:
        stamp = data.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        if len(_STAMP_CACHE) < 100_000:
            _STAMP_CACHE[data] = stamp
    sha = _ID_HASH.copy()
    sha.update(f"{cod_cliente}|{id_lote}|{id_curral}|{stamp}".encode())
    h = sha.hexdigest()
    # Version 5 in the 13th hex digit, RFC 4122 variant (10xx) in the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# Bump when clean() would make a different row of the same line: every stored fingerprint then
# stops matching, and the next reload cleans and compares every line in full.
FINGERPRINT_VERSION = 1
_FP_SALT = (
    int.from_bytes(
        hashlib.blake2b(f"feedlot row_fp {FINGERPRINT_VERSION}".encode(), digest_size=8).digest()
    )
    >> 1
)  # 63 bits: every fingerprint fits a signed BIGINT


def row_fingerprint(line: bytes | str) -> int:
    """63-bit fingerprint of the raw line a row is made from (stored as ``row_fp``).

    A reloaded line whose ``natural_key``, fingerprint, farm and rule match a stored row would be
    cleaned into exactly that row again, so the reload skips it. It only ever tells apart lines
    of the same natural key, so a checksum is enough: CRC-32 (which catches every change
    confined to 32 consecutive bits, e.g. an edited number) beside Adler-32, salted with
    FINGERPRINT_VERSION. It costs ~0.3 µs a line; a cryptographic hash 2-3 µs. A line that
    differs only in formatting gets another fingerprint and is merely cleaned in full.
    """
    if type(line) is not bytes:
        line = str(line).encode()
    return (_crc32(line) << 31) ^ _adler32(line) ^ _FP_SALT


def natural_key(raw: Any, clients: Mapping[str, str]) -> tuple[str, str, date] | None:
    """(id_treated_data, fazenda, day) of a record in the usual shape, without judging the rest.

    What a reload needs to look a line's row up before cleaning it; None sends the line to
    ``clean``. For any record that ``clean`` accepts, the id is the one ``clean`` gives it.
    """
    if type(raw) is not dict:
        return None
    get = raw.get
    cod_cliente = get("cod_cliente")
    fazenda = clients.get(cod_cliente) if type(cod_cliente) is str else None
    if fazenda is None:
        return None
    id_lote = get("id_lote")
    id_curral = get("id_curral")
    text = get("data")
    if type(id_lote) is not str or type(id_curral) is not str or type(text) is not str:
        return None
    data = _DATE_CACHE.get(text)
    if data is None:
        try:
            data = parse_data(text)  # a day not met yet in this process: parse it once
        except RecordError:
            return None
    return treated_id(cod_cliente, id_lote, id_curral, data), fazenda, data.date()


@dataclass(frozen=True)
class Route:
    """Where a raw record lands in the lake: a farm and the record's own UTC day."""

    fazenda: str
    dia: date
    reason: str | None = None  # set when the record could not be routed to a real farm


def route(
    raw: Any,
    clients: Mapping[str, str],
    landing_day: date,
    valid_days: tuple[date, date] | None = None,
) -> Route:
    """Decide the raw-zone partition of a record without judging the rest of it.

    A record whose client is unknown, or whose date is missing or bad, lands in the ``_unrouted``
    farm (by its date when that parses, else the landing day) so nothing is lost; the warehouse
    asset then rejects it with the precise reason. It is never filed under a real farm.
    """
    if not isinstance(raw, dict):
        return Route(UNROUTED_FARM, landing_day, "record is not a JSON object")
    try:
        dia = parse_data(raw.get("data")).date()
    except RecordError as err:
        return Route(UNROUTED_FARM, landing_day, err.reason)
    if valid_days is not None and not valid_days[0] <= dia <= valid_days[1]:
        reason = f"data {dia} is outside the platform's days {valid_days[0]}..{valid_days[1]}"
        return Route(UNROUTED_FARM, landing_day, reason)
    client = raw.get("cod_cliente")
    fazenda = clients.get(client) if isinstance(client, str) else None
    if fazenda is None:
        return Route(UNROUTED_FARM, dia, f"unknown cod_cliente {str(client)[:40]!r}")
    return Route(fazenda, dia)


# --- the whole rule set for one record ---------------------------------------------------------


def _row(
    cod_cliente: str,
    fazenda: str,
    id_curral: str,
    id_raca: str,
    id_lote: str,
    peso_entrada: float,
    peso_medio: float,
    quantidade: int,
    dia_conf: int,
    consumo_real: float,
    data: datetime,
    rule: ConsumoMetaRule,
    raw_object_key: str,
    row_ts: datetime,
    correlation_id: str | None,
    row_fp: int | None,
    landed_at: datetime | None,
    line_no: int | None,
) -> tuple:
    """The warehouse row in WAREHOUSE_COLUMNS order: the one place that order is written."""
    return (
        treated_id(cod_cliente, id_lote, id_curral, data),
        id_curral,
        id_raca,
        id_lote,
        peso_entrada,
        peso_medio,
        quantidade,
        dia_conf,
        consumo_real,
        rule.compute(peso_medio, peso_entrada, dia_conf),
        data,
        cod_cliente,
        fazenda,
        rule.name,
        raw_object_key,
        row_ts,
        correlation_id,
        row_fp,
        landed_at,
        line_no,
    )


def clean(
    raw: Any,
    clients: Mapping[str, str],
    rule: ConsumoMetaRule,
    raw_object_key: str,
    row_ts: datetime,
    correlation_id: str | None = None,
    row_fp: int | None = None,
    landed_at: datetime | None = None,
    line_no: int | None = None,
) -> tuple:
    """Validate and enrich one raw record into a warehouse row (``WAREHOUSE_COLUMNS`` order).

    ``correlation_id`` is the ingest's trace id (stored with the landed object), kept on the row
    so one record can be followed from the request that brought it to the table; ``row_fp`` is
    the line's ``row_fingerprint``, stored so a reload can recognise the row; ``landed_at`` and
    ``line_no`` place the line in the landing order (latest landing wins). Raises
    ``RecordError`` with a stable code and a readable reason when the record must be rejected.
    """
    where = (raw_object_key, row_ts, correlation_id, row_fp, landed_at, line_no)
    if type(raw) is dict:
        row = _clean_usual(raw, clients, rule, *where)
        if row is not None:
            return row
    return _clean_checked(raw, clients, rule, *where)


def _clean_usual(
    raw: dict,
    clients: Mapping[str, str],
    rule: ConsumoMetaRule,
    raw_object_key: str,
    row_ts: datetime,
    correlation_id: str | None = None,
    row_fp: int | None = None,
    landed_at: datetime | None = None,
    line_no: int | None = None,
) -> tuple | None:
    """``clean`` for a record in the usual shape, over twice as fast; None for anything else.

    It accepts only values that ``_clean_checked`` accepts unchanged and returns the same row, so
    on None the checked path runs and raises the precise error. No exception on the common path.
    """
    get = raw.get
    cod_cliente = get("cod_cliente")
    if type(cod_cliente) is not str or len(cod_cliente) > _MAX_TEXT:
        return None
    fazenda = clients.get(cod_cliente)
    if fazenda is None or cod_cliente.strip() != cod_cliente:
        return None
    id_curral = get("id_curral")
    id_raca = get("id_raca")
    id_lote = get("id_lote")
    if not (
        type(id_curral) is str
        and type(id_raca) is str
        and type(id_lote) is str
        and len(id_curral) <= 32
        and len(id_raca) <= 32
        and len(id_lote) <= 32
        and id_curral.isdigit()
        and id_raca.isdigit()
        and id_lote.isdigit()
        and id_curral.isascii()
        and id_raca.isascii()
        and id_lote.isascii()
    ):
        return None
    peso_entrada = get("peso_entrada")
    peso_medio = get("peso_medio")
    consumo_real = get("consumo_real")
    if type(peso_entrada) is not float:
        if type(peso_entrada) is not int:
            return None
        peso_entrada = float(peso_entrada)
    if type(peso_medio) is not float:
        if type(peso_medio) is not int:
            return None
        peso_medio = float(peso_medio)
    if type(consumo_real) is not float:
        if type(consumo_real) is not int:
            return None
        consumo_real = float(consumo_real)
    # x - x is 0.0 for every finite float and nan for inf/nan; the sign checks follow.
    if not (peso_entrada - peso_entrada == 0.0 and peso_entrada > 0 and peso_medio > 0):
        return None
    if not (peso_medio - peso_medio == 0.0 and consumo_real - consumo_real == 0.0):
        return None
    if consumo_real < 0:
        return None
    quantidade = get("quantidade_animais")
    if type(quantidade) is str:
        quantidade = _DIGIT_INTS.get(quantidade) or _digit_int(quantidade)
        if quantidade is None:
            return None
    elif type(quantidade) is not int:
        return None
    dia_conf = get("dia_confinamento")
    if type(dia_conf) is str:
        dia_conf = _DIGIT_INTS.get(dia_conf) or _digit_int(dia_conf)
        if dia_conf is None:
            return None
    elif type(dia_conf) is not int:
        return None
    if quantidade <= 0 or dia_conf < 0:
        return None
    text = get("data")
    data = _DATE_CACHE.get(text) if type(text) is str else None
    if data is None:
        return None  # the checked path parses it once and fills the cache
    return _row(
        cod_cliente,
        fazenda,
        id_curral,
        id_raca,
        id_lote,
        peso_entrada,
        peso_medio,
        quantidade,
        dia_conf,
        consumo_real,
        data,
        rule,
        raw_object_key,
        row_ts,
        correlation_id,
        row_fp,
        landed_at,
        line_no,
    )


_DIGIT_INTS: dict[str, int] = {}  # "51" -> 51: counts repeat, so most are one lookup


def _digit_int(text: str) -> int | None:
    """int of 1-9 ASCII digits (what _INT_TEXT accepts without sign or blanks), else None."""
    if 0 < len(text) <= 9 and text.isdigit() and text.isascii():
        value = int(text)
        if len(_DIGIT_INTS) < 100_000:
            _DIGIT_INTS[text] = value
        return value
    return None


def _clean_checked(
    raw: Any,
    clients: Mapping[str, str],
    rule: ConsumoMetaRule,
    raw_object_key: str,
    row_ts: datetime,
    correlation_id: str | None = None,
    row_fp: int | None = None,
    landed_at: datetime | None = None,
    line_no: int | None = None,
) -> tuple:
    """Every rule checked in order, with the precise error; the reference for ``_clean_usual``."""
    if isinstance(raw, _UnparsedLine):
        raise RecordError("invalid_json", f"line is not valid JSON: {raw[:60]!r}")
    if not isinstance(raw, dict):
        raise RecordError("not_an_object", f"record is not a JSON object: {type(raw).__name__}")
    _missing(raw)
    cod_cliente = _client(raw)
    fazenda = clients.get(cod_cliente)
    if fazenda is None:
        raise RecordError("unknown_client", f"unknown cod_cliente {cod_cliente[:40]!r}")
    id_curral = _id(raw, "id_curral")
    id_raca = _id(raw, "id_raca")
    id_lote = _id(raw, "id_lote")
    peso_entrada = _float(raw, "peso_entrada")
    peso_medio = _float(raw, "peso_medio")
    consumo_real = _float(raw, "consumo_real")
    quantidade = _int(raw, "quantidade_animais")
    dia_conf = _int(raw, "dia_confinamento")
    if peso_entrada <= 0 or peso_medio <= 0:
        raise RecordError("non_positive", "peso_entrada and peso_medio must be positive")
    if quantidade <= 0:
        raise RecordError("non_positive", "quantidade_animais must be positive")
    if dia_conf < 0:
        raise RecordError("negative", "dia_confinamento must not be negative")
    if consumo_real < 0:
        raise RecordError("negative", "consumo_real must not be negative")
    data = parse_data(raw["data"])
    return _row(
        cod_cliente,
        fazenda,
        id_curral,
        id_raca,
        id_lote,
        peso_entrada,
        peso_medio,
        quantidade,
        dia_conf,
        consumo_real,
        data,
        rule,
        raw_object_key,
        row_ts,
        correlation_id,
        row_fp,
        landed_at,
        line_no,
    )


def loads_line(line: bytes | str) -> Any:
    """Parse one JSON Lines line; a bad line becomes its text so it can be rejected, not lost."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _UnparsedLine(line if isinstance(line, str) else line.decode("utf-8", "replace"))


class _UnparsedLine(str):
    """Text of a line that was not valid JSON."""
