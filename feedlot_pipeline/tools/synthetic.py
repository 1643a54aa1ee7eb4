"""Synthetic consumption records in the shape farms send (seed 001): tests, demos, benchmarks.

The shape follows the original case: 14-digit id strings, counts as digit strings, ``data`` like
``"2023-01-01 00:00:00 UTC"``, one record per pen (curral) per day. Pens keep their lot (lote)
from day to day, so weights grow with ``dia_confinamento`` and ``consumo_real`` stays around
1.5–2.5 % of ``peso_medio``; a lot that has finished leaves and a new one enters the pen.

The output is deterministic for a seed and ``(cod_cliente, id_lote, id_curral, data)`` is unique,
so a generated file loads without duplicates. ``bad_fraction`` breaks some records on purpose, in
the ways real feeds break, to exercise the rejection path.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

DEFAULT_FARMS = ("FazendaUm", "FazendaDois")  # the two clients the migration seeds
RACAS = ("28551700000020", "9000001", "28551700000037", "31027400000011")
# How records are broken with bad_fraction > 0, and the reason_code each one gets.
BREAKAGES = {
    "missing_field": "missing_field",
    "negative_weight": "non_positive",
    "unknown_client": "unknown_client",
    "bad_date": "invalid_data",
    "bad_count": "invalid_number",
    "not_a_number": "invalid_number",
}
UNKNOWN_CLIENT = "FazendaDesconhecida"
_FIELDS = (
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
)


@dataclass
class _Lot:
    id_lote: str
    id_raca: str
    peso_entrada: float
    gain: float  # kg per day
    day: int  # dia_confinamento today
    animals: int
    intake_pct: float  # consumo_real / peso_medio, around 1.5–2.5 %
    leaves_at: int


@dataclass
class _Pen:
    cod_cliente: str
    id_curral: str
    lot: _Lot


def pens_per_day(n: int, farms: int) -> int:
    """How many pens report each day: about 2·√n, so n records cover about √n/2 days."""
    return max(2 * farms, math.ceil(2 * math.sqrt(max(n, 1))))


def generate(
    n: int,
    seed: int = 7,
    farms: Sequence[str] = DEFAULT_FARMS,
    start: date = date(2023, 1, 1),
    bad_fraction: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` records, day by day from ``start``, pen by pen within a day.

    ``farms`` are the ``cod_cliente`` values; only the two seeded clients by default, so every
    unbroken record loads. The first farm is the smallest, as in the case (13 pens vs 215).
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError("bad_fraction must be between 0 and 1")
    if not farms:
        raise ValueError("farms must name at least one cod_cliente")
    rng = random.Random(seed)
    used: set[str] = set()

    def new_id(digits: int) -> str:
        """A random digit string not used before in this run (ids are unique per run)."""
        while True:
            candidate = str(rng.randrange(10 ** (digits - 1), 10**digits))
            if candidate not in used:
                used.add(candidate)
                return candidate

    def new_lot(first_day: bool) -> _Lot:
        peso = round(rng.uniform(170.0, 420.0), 3)
        duration = rng.randint(100, 220)
        return _Lot(
            id_lote=new_id(rng.choice((14, 15))),
            id_raca=rng.choice(RACAS),
            peso_entrada=peso,
            gain=round(rng.uniform(0.9, 1.6), 3),
            day=rng.randint(1, duration - 1) if first_day else rng.randint(1, 10),
            animals=rng.randint(14, 84),
            intake_pct=rng.uniform(0.015, 0.025),
            leaves_at=duration,
        )

    count = pens_per_day(n, len(farms))
    weights = [1 + 3 * i for i in range(len(farms))]  # later farms are bigger
    pens: list[_Pen] = []
    for i in range(count):
        cod = farms[i % len(farms)] if i < len(farms) else rng.choices(farms, weights)[0]
        pen_id = new_id(14)
        pens.append(_Pen(cod, pen_id, new_lot(True)))
    pens.sort(key=lambda p: (farms.index(p.cod_cliente), p.id_curral))

    produced = 0
    day = start
    while produced < n:
        stamp = f"{day.isoformat()} 00:00:00 UTC"
        for pen in pens:
            if produced >= n:
                return
            lot = pen.lot
            if lot.day > lot.leaves_at:
                lot = pen.lot = new_lot(False)
            peso_medio = lot.peso_entrada + lot.gain * lot.day + rng.uniform(-1.5, 1.5)
            record = {
                "id_curral": pen.id_curral,
                "id_raca": lot.id_raca,
                "id_lote": lot.id_lote,
                "peso_entrada": lot.peso_entrada,
                "peso_medio": round(peso_medio, 3),
                "data": stamp,
                "quantidade_animais": str(lot.animals),
                "dia_confinamento": str(lot.day),
                "consumo_real": round(peso_medio * lot.intake_pct * rng.uniform(0.9, 1.1), 6),
                "cod_cliente": pen.cod_cliente,
            }
            lot.day += 1
            if bad_fraction and rng.random() < bad_fraction:
                _break(record, rng)
            produced += 1
            yield record
        day += timedelta(days=1)


def _break(record: dict[str, Any], rng: random.Random) -> str:
    """Damage a record in one of the ways in BREAKAGES; return which."""
    kind = rng.choice(tuple(BREAKAGES))
    if kind == "missing_field":
        del record[rng.choice(_FIELDS)]
    elif kind == "negative_weight":
        field = rng.choice(("peso_entrada", "peso_medio"))
        record[field] = -abs(record[field])
    elif kind == "unknown_client":
        record["cod_cliente"] = UNKNOWN_CLIENT
    elif kind == "bad_date":
        record["data"] = rng.choice(("2023-13-45 00:00:00 UTC", "ontem", "2023-01-01 00:00:00"))
    elif kind == "bad_count":
        record["quantidade_animais"] = rng.choice(("abc", "-3", "1.5e3"))
    else:
        record["consumo_real"] = "n/a"
    return kind


def write_jsonl(
    path: str | Path,
    n: int,
    seed: int = 7,
    *,
    farms: Sequence[str] = DEFAULT_FARMS,
    start: date = date(2023, 1, 1),
    bad_fraction: float = 0.0,
) -> Path:
    """Write ``generate(...)`` as JSON Lines, streamed: memory stays flat whatever ``n``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = orjson.dumps
    with path.open("wb", buffering=1 << 20) as out:
        batch: list[bytes] = []
        for record in generate(n, seed, farms, start, bad_fraction):
            batch.append(dumps(record))
            if len(batch) >= 10_000:
                out.write(b"\n".join(batch) + b"\n")
                batch.clear()
        if batch:
            out.write(b"\n".join(batch) + b"\n")
    return path
