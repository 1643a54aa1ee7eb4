"""The messages parts of the platform send each other, as typed, versioned contracts.

- ``LandingNotice``: a landing Lambda → the sensor queue → ``consumption_events_sensor``.
- ``LargeFileMessage``: the S3 Lambda → the large-file queue → ``large_file_sensor``.
- ``FailureDocument``: anything that gives up on a whole event → the failure topic.
- ``PartitionsMessage`` / ``ProgressMessage``: the EC2 worker → Dagster, as Pipes custom messages.

A producer builds the model and sends ``to_json()``; a consumer calls ``parse(text)``, which
raises ValueError with a readable reason for anything that is not a valid message (the reason goes
with the message to its dead-letter queue, so it is written for people). Every message states its
``type`` and ``version``; unknown extra fields are ignored, so a producer may add one before every
consumer knows it.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from feedlot_pipeline.core.lake import parse_raw_key

EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # safe in S3 keys, run keys and tags


def _reason(err: ValidationError) -> str:
    """One clause per problem: ``field: what is wrong``."""
    parts = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "message"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


class Contract(BaseModel):
    """A message with a ``type`` and a ``version`` (both must be stated when parsed)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    type: str
    version: int

    @field_validator("version", mode="before")
    @classmethod
    def _not_a_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # True == 1 would pass a Literal[1]
            raise PydanticCustomError("literal_error", "Input should be 1")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """ASCII-only JSON: SQS refuses characters an S3 key may hold (U+FFFE, U+FFFF)."""
        return json.dumps(self.to_dict(), ensure_ascii=True)

    @classmethod
    def parse(cls, text: str | bytes) -> Any:
        """The message in ``text``; ValueError with the reason when it is not a valid one."""
        name = cls.model_fields["type"].default
        try:
            msg = cls.model_validate_json(text)
        except ValidationError as err:
            raise ValueError(f"not a valid {name} message: {_reason(err)}") from None
        unstated = [f for f in ("type", "version") if f not in msg.model_fields_set]
        if unstated:
            reason = "; ".join(f"{f}: Field required" for f in unstated)
            raise ValueError(f"not a valid {name} message: {reason}")
        return msg


class LandingNotice(Contract):
    """What a landing tells the sensor: one raw object, its partition and its record count."""

    type: Literal["raw_landing"] = "raw_landing"
    version: Literal[1] = 1
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(max_length=512)
    fazenda: str
    dia: str  # YYYY-MM-DD, the record's own UTC day
    records: int = Field(ge=0)
    source: str
    event_id: str
    landed_at: str  # ISO 8601, UTC
    correlation_id: str | None = None

    @model_validator(mode="after")
    def _key_names_the_partition(self) -> LandingNotice:
        fazenda, dia = parse_raw_key(self.key)
        if (fazenda, dia.isoformat()) != (self.fazenda, self.dia):
            raise ValueError("notice partition does not match its object key")
        return self

    @property
    def day(self) -> date:
        return date.fromisoformat(self.dia)


class LargeFileMessage(Contract):
    """A dropped file left to the EC2 worker: which object, its size and ETag, and the event id
    (from bucket, key, ETag and version) that makes a repeated announcement one run."""

    type: Literal["large_file"] = "large_file"
    version: Literal[1] = 1
    bucket: str
    key: str
    size: int = Field(ge=0)
    etag: str
    event_id: str = Field(pattern=EVENT_ID_PATTERN)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class FailureDocument(Contract):
    """A whole event the platform gave up on, as published on the failure topic."""

    model_config = ConfigDict(frozen=False, strict=True, extra="ignore")

    type: Literal["feedlot_failure"] = "feedlot_failure"
    version: Literal[1] = 1
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

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"event_id"}) | {
            "event_id": self.event_id
        }


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

    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    type: Literal["historico_consumo_partitions"] = "historico_consumo_partitions"
    version: Literal[1] = 1
    asset_key: str = "historico_consumo"
    job: str
    job_id: str
    input: str
    import_id: str
    partitions: list[PartitionCount]
    totals: dict[str, Any]


class ProgressMessage(Contract):
    """The worker's Pipes custom message after every chunk of a bulk import."""

    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    type: Literal["bulk_import.progress"] = "bulk_import.progress"
    version: Literal[1] = 1
    job_id: str
    chunks: int
    records: int
    records_per_second: float
    partitions_so_far: int


class ClientMapDocument(Contract):
    """``cod_cliente`` → farm, as published to the lake for readers that must not need the
    warehouse (the landing Lambdas, the sensor): ``core.client_map``."""

    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    type: Literal["client_map"] = "client_map"
    version: Literal[1] = 1
    clients: dict[str, str]
    digest: str
    published_at: str


class FailedCheck(BaseModel):
    """One failed asset check evaluation named in an alert."""

    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    asset: str
    check: str
    partition: str | None = None
    severity: str = "ERROR"
    blocking: bool | None = None
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AlertDocument(Contract):
    """An operator alert on the alerts topic: a failed Dagster run, or failed asset checks of a
    run that succeeded (a failing blocking check fails its run, so it comes as ``run_failure``
    with the check listed: one alert per run, never two).

    ``partition`` is the run's own partition (``dagster/partition``), None for a batch run over
    many; ``partitions`` are the partitions named by its failed checks. ``error`` is the first
    failed step's error (else the run's), cut to 4000 characters; ``failed_checks`` lists at most
    50, ``failed_checks_total`` says how many failed.
    """

    model_config = ConfigDict(frozen=True, strict=False, extra="ignore")

    type: Literal["feedlot_alert"] = "feedlot_alert"
    version: Literal[1] = 1
    kind: Literal["run_failure", "check_failure"]
    severity: Literal["error", "warning"]
    title: str = Field(max_length=200)
    run_id: str
    job: str
    partition: str | None = None
    partitions: list[str] = Field(default_factory=list)
    error: str | None = None
    failed_steps: list[str] = Field(default_factory=list)
    failed_checks: list[FailedCheck] = Field(default_factory=list)
    failed_checks_total: int = 0
    run_url: str
    time: str  # ISO 8601, UTC: when the run failed or finished
    tags: dict[str, str] = Field(default_factory=dict)
    host: str = ""


class PartitionLoadedNotice(Contract):
    """Analytics → the processed-events topic: one farm × day partition was loaded and its
    summaries, describe CSV and curated Parquet files are written (subscribe instead of polling).

    ``rows``: rows of historico_consumo in the partition; ``lots``: rows of consumo_diario (lots ×
    pens); ``rejected``: rows of historico_consumo_rejeitados; ``correlation_ids``: the ingests'
    trace ids found on those rows (at most 100, sorted); ``outputs``: S3 URIs written.
    """

    type: Literal["partition_loaded"] = "partition_loaded"
    version: Literal[1] = 1
    fazenda: str
    dia: str  # YYYY-MM-DD
    rows: int = Field(ge=0)
    lots: int = Field(ge=0)
    rejected: int = Field(ge=0)
    total_kg: float = Field(ge=0)
    correlation_ids: list[str] = Field(default_factory=list)
    correlation_ids_truncated: bool = False
    outputs: dict[str, str] = Field(default_factory=dict)
    refreshed_at: str  # ISO 8601, UTC
    run_id: str | None = None
