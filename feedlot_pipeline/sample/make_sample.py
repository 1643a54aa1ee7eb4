"""Write the project's own sample data set (deterministic; run once, output committed).

Two farms (cod_cliente ``FazendaUm``, ``FazendaDois``), three days, one JSON Lines file per farm and
day in the original case's format: ids as digit strings, ``quantidade_animais`` and
``dia_confinamento`` as strings, ``data`` like ``"2024-03-18 00:00:00 UTC"``. The same pens and lots
appear every day, a day older and a little heavier. The last FazendaDois file also carries a few
deliberately bad records (negative weight, missing field, unknown client, bad date) so the demo
shows rejections; one file lacks its final newline, as the original case's files do.

Run: ``python -m feedlot_pipeline.sample.make_sample``
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).parent
SEED = 20240318
FIRST_DAY = date(2024, 3, 18)
DAYS = 3
# cod_cliente → (pens, farm number used in ids)
FARMS = {"FazendaUm": (24, 1), "FazendaDois": (46, 2)}
RACAS = ("28551700000020", "28551700000031", "9000001", "9000002")


def _lots(rng: random.Random, cod_cliente: str, pens: int, farm_no: int) -> list[dict]:
    """The farm's pens on the first day: fixed ids, entry weight, head count, days on feed."""
    lots = []
    for i in range(pens):
        peso_entrada = round(rng.uniform(220.0, 340.0), 3)
        dia = rng.randint(5, 110)
        lots.append(
            {
                "id_curral": f"{40000000000000 + farm_no * 1_000_000 + i * 137:014d}",
                "id_raca": rng.choice(RACAS),
                "id_lote": f"{81000000000000 + farm_no * 10_000_000 + i * 1_009:014d}",
                "peso_entrada": peso_entrada,
                "gain": rng.uniform(1.2, 1.8),  # kg per day
                "quantidade_animais": rng.randint(30, 120),
                "dia_confinamento": dia,
                "cod_cliente": cod_cliente,
            }
        )
    return lots


def _record(rng: random.Random, lot: dict, day_index: int, day: date) -> dict:
    dia = lot["dia_confinamento"] + day_index
    peso_medio = round(lot["peso_entrada"] + lot["gain"] * dia + rng.uniform(-2.0, 2.0), 3)
    consumo_real = round(peso_medio * rng.uniform(0.019, 0.025), 6)
    return {
        "id_curral": lot["id_curral"],
        "id_raca": lot["id_raca"],
        "id_lote": lot["id_lote"],
        "peso_entrada": lot["peso_entrada"],
        "peso_medio": peso_medio,
        "data": f"{day.isoformat()} 00:00:00 UTC",
        "quantidade_animais": str(lot["quantidade_animais"]),
        "dia_confinamento": str(dia),
        "consumo_real": consumo_real,
        "cod_cliente": lot["cod_cliente"],
    }


def _bad_records(rng: random.Random, template: dict, day: date) -> list[dict]:
    """One record per rejection the demo should show, each with its own lot id."""

    def variant(n: int) -> dict:
        rec = dict(template)
        rec["id_lote"] = f"{89900000000000 + n:014d}"
        return rec

    negative = variant(1)
    negative["peso_medio"] = -abs(negative["peso_medio"])
    missing = variant(2)
    del missing["consumo_real"]
    unknown = variant(3)
    unknown["cod_cliente"] = "FazendaX"
    bad_date = variant(4)
    bad_date["data"] = f"{day.year}-{day.month:02d}-32 00:00:00 UTC"
    return [negative, missing, unknown, bad_date]


def build() -> dict[str, list[dict]]:
    """File name → records, the same on every run."""
    rng = random.Random(SEED)
    files: dict[str, list[dict]] = {}
    for cod_cliente, (pens, farm_no) in FARMS.items():
        lots = _lots(rng, cod_cliente, pens, farm_no)
        for day_index in range(DAYS):
            day = FIRST_DAY + timedelta(days=day_index)
            records = [_record(rng, lot, day_index, day) for lot in lots]
            name = f"{cod_cliente}_Consumo_{day:%Y%m%d}.jsonl"
            if cod_cliente == "FazendaDois" and day_index == DAYS - 1:
                for bad in _bad_records(rng, records[0], day):
                    records.insert(rng.randrange(len(records) + 1), bad)
            files[name] = records
    return files


def write(target: Path = HERE) -> list[Path]:
    written = []
    first = f"FazendaUm_Consumo_{FIRST_DAY:%Y%m%d}.jsonl"
    for name, records in build().items():
        text = "\n".join(json.dumps(r, separators=(",", ":")) for r in records)
        path = target / name
        # Like the original case's files, this one has no newline after its last record.
        path.write_text(text if name == first else text + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
