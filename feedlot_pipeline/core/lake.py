"""The raw zone's layout (the notice a landing sends is ``core.contracts.LandingNotice``).

Layout: ``historico_diario/<fazenda>/<yyyy>/<mm>/<dd>/<source>-<event id>.jsonl``, one JSON value
per line exactly as received. The key is derived from the delivery's event id, so a redelivered
event maps to the same object and lands nothing twice.
"""

from __future__ import annotations

import re
from datetime import date

RAW_PREFIX = "historico_diario"
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_FARM = re.compile(r"^[a-z0-9_]{1,64}$")


def safe_token(text: str, limit: int = 128) -> str:
    """A key segment that cannot escape its prefix: letters, digits, '_' and '-' only."""
    return _SAFE.sub("_", text)[:limit] or "_"


def check_farm(fazenda: str) -> str:
    if not _FARM.match(fazenda) and fazenda != "_unrouted":
        raise ValueError(f"invalid fazenda {fazenda!r}: lower-case letters, digits and _ only")
    return fazenda


def partition_prefix(fazenda: str, dia: date) -> str:
    """Prefix of every raw object of one (farm, day) partition, ending with '/'."""
    return f"{RAW_PREFIX}/{check_farm(fazenda)}/{dia:%Y/%m/%d}/"


def raw_object_key(fazenda: str, dia: date, source: str, event_id: str) -> str:
    return f"{partition_prefix(fazenda, dia)}{safe_token(source, 16)}-{safe_token(event_id)}.jsonl"


def parse_raw_key(key: str) -> tuple[str, date]:
    """(fazenda, day) of a raw object key; ValueError when the key is not in the raw layout."""
    parts = key.split("/")
    if len(parts) != 6 or parts[0] != RAW_PREFIX:
        raise ValueError(f"not a raw-zone key: {key!r}")
    return check_farm(parts[1]), date(int(parts[2]), int(parts[3]), int(parts[4]))
