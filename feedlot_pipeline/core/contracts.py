"""The messages parts of the platform send each other, as typed, versioned contracts.

- ``LandingNotice``: a landing Lambda → the sensor queue → ``consumption_events_sensor``.
- ``LargeFileMessage``: the S3 Lambda → the large-file queue → ``large_file_sensor``.
- ``FailureDocument``: anything that gives up on a whole event → the failure topic.
- ``PartitionsMessage`` / ``ProgressMessage``: the EC2 worker → Dagster, as Pipes custom messages.

Every message carries ``type`` and ``version``; ``parse`` refuses another type or version and any
missing or malformed field with a ``ValueError`` whose text says what is wrong (it ends up as the
``reason`` of a dead letter, so it is written for people).
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feedlot_pipeline.core.lake import parse_raw_key

_EVENT_ID = r"^[A-Za-z0-9_-]{1,128}$"


class Contract(BaseModel):
    """A message with a ``type`` and a ``version``; ``to_json`` / ``parse`` round-trip it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "version": self.VERSION, **self.model_dump(mode="json")}

    @classmethod
    def parse(cls, text: str | bytes) -> Any:
        """The checked message; ValueError with the reason when ``text`` is not one."""
        try:
            body: Any = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"{cls.TYPE} message is not JSON: {err}") from None
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls, body: Any) -> Any:
        if not isinstance(body, dict) or body.get("type") != cls.TYPE:
            raise ValueError(f"message has no type {cls.TYPE!r}")
        if body.get("version") != cls.VERSION:
            raise ValueError(f"unsupported {cls.TYPE} version {body.get('version')!r}")
        try:
            return cls.model_validate(body)
        except ValidationError as err:
            why = _why(err)
            raise ValueError(f"{cls.TYPE} message is missing or has a bad field: {why}") from None


def _why(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in err.errors()
    )


class LandingNotice(Contract):
    """What a landing tells the sensor: one raw object, its partition and its record count."""

    TYPE: ClassVar[str] = "raw_landing"
    VERSION: ClassVar[int] = 1

    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(max_length=512)
    fazenda: str
    dia: str  # YYYY-MM-DD
    records: int = Field(ge=0)
    source: str
    event_id: str
    landed_at: str
    correlation_id: str | None = None

    @classmethod
    def from_dict(cls, body: Any) -> LandingNotice:
        notice: LandingNotice = super().from_dict(body)
        fazenda, dia = parse_raw_key(notice.key)
        if (fazenda, dia.isoformat()) != (notice.fazenda, notice.dia):
            raise ValueError("notice partition does not match its object key")
        return notice

    @property
    def day(self) -> date:
        return date.fromisoformat(self.dia)


class LargeFileMessage(Contract):
    """A dropped file too large for the S3 Lambda, handed to the EC2 worker's bulk import."""

    TYPE: ClassVar[str] = "large_file"
    VERSION: ClassVar[int] = 1

    bucket: str
    key: str
    size: int = Field(ge=0, strict=True)
    etag: str
    event_id: str = Field(pattern=_EVENT_ID)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class FailureDocument(Contract):
    """A whole event the platform gave up on, as published on the failure topic."""

    TYPE: ClassVar[str] = "feedlot_failure"
    VERSION: ClassVar[int] = 1

    source: str
    stage: str
    reason: str
    event_id: str | None
    time: str
    payload: str
    payload_bytes: int
    payload_truncated: bool = False
    host: str = ""
    feedlot_version: str = "unknown"
    details: dict[str, Any] | None = None
    note: str | None = None


class PartitionCount(BaseModel):
    """One historico_consumo partition a worker job touched, with this job's counts."""

    model_config = ConfigDict(extra="allow")

    fazenda: str
    dia: str
    records: int = 0
    loaded: int = 0
    rejected: int = 0
    raw_objects: int = 0


class PartitionsMessage(Contract):
    """The worker's Pipes custom message listing the partitions a bulk import touched."""

    TYPE: ClassVar[str] = "historico_consumo_partitions"
    VERSION: ClassVar[int] = 1

    asset_key: str = "historico_consumo"
    job: str
    job_id: str
    input: str
    import_id: str
    partitions: list[PartitionCount]
    totals: dict[str, Any]


class ProgressMessage(Contract):
    """The worker's Pipes custom message after every chunk of a bulk import."""

    TYPE: ClassVar[str] = "bulk_import.progress"
    VERSION: ClassVar[int] = 1

    job_id: str
    chunks: int
    records: int
    records_per_second: float
    partitions_so_far: int
