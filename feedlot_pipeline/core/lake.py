"""The raw zone's layout and the notice a landing sends to the sensor queue.

Layout: ``historico_diario/<fazenda>/<yyyy>/<mm>/<dd>/<source>-<event id>.jsonl``, one JSON value
per line exactly as received. The key is derived from the delivery's event id, so a redelivered
event maps to the same object and lands nothing twice.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import orjson

RAW_PREFIX = "historico_diario"
NOTICE_TYPE = "raw_landing"
NOTICE_VERSION = 1
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


@dataclass(frozen=True)
class LandingNotice:
    """What a landing tells the sensor: one object, its partition and its record count."""

    bucket: str
    key: str
    fazenda: str
    dia: str  # YYYY-MM-DD
    records: int
    source: str
    event_id: str
    landed_at: str
    correlation_id: str | None = None

    def to_json(self) -> str:
        body = {"type": NOTICE_TYPE, "version": NOTICE_VERSION, **asdict(self)}
        return orjson.dumps(body).decode()

    @classmethod
    def from_json(cls, text: str) -> LandingNotice:
        """Parse and check a notice; ValueError with the reason when it is not one."""
        try:
            body: Any = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"notice is not JSON: {err}") from None
        if not isinstance(body, dict) or body.get("type") != NOTICE_TYPE:
            raise ValueError("notice has no type 'raw_landing'")
        if body.get("version") != NOTICE_VERSION:
            raise ValueError(f"unsupported notice version {body.get('version')!r}")
        try:
            notice = cls(
                bucket=str(body["bucket"]),
                key=str(body["key"]),
                fazenda=str(body["fazenda"]),
                dia=str(body["dia"]),
                records=int(body["records"]),
                source=str(body["source"]),
                event_id=str(body["event_id"]),
                landed_at=str(body["landed_at"]),
                correlation_id=body.get("correlation_id"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"notice is missing or has a bad field: {err}") from None
        fazenda, dia = parse_raw_key(notice.key)
        if (fazenda, dia.isoformat()) != (notice.fazenda, notice.dia):
            raise ValueError("notice partition does not match its object key")
        return notice
