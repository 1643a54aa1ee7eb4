"""Message contracts between the platform's parts, as pydantic models.

A producer builds the model and sends ``to_json()``; a consumer calls ``parse(text)``, which
raises ValueError with a readable reason for anything that is not a valid message (the reason
goes with the message to its dead-letter queue). Unknown extra fields are ignored, so a producer
may add one before every consumer knows it.

- ``LargeFileMessage``: the S3 Lambda → large-file queue → ``large_file_sensor`` (a dropped
  file too big for the Lambda, left to the EC2 worker's bulk import).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # safe in S3 keys, run keys and tags


def _reason(err: ValidationError) -> str:
    """One line per problem: ``field: what is wrong``."""
    parts = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "message"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


class LargeFileMessage(BaseModel):
    """A dropped file left to the EC2 worker: which object, its size and ETag, and the event id
    (from bucket, key, ETag and version) that makes a repeated announcement one run."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")

    type: Literal["large_file"] = "large_file"
    version: Literal[1] = 1
    bucket: str
    key: str
    size: int = Field(ge=0)
    etag: str
    event_id: str = Field(pattern=EVENT_ID_PATTERN)

    @field_validator("version", mode="before")
    @classmethod
    def _not_a_bool(cls, value: object) -> object:
        if isinstance(value, bool):  # True == 1 would pass the Literal
            raise PydanticCustomError("literal_error", "Input should be 1")
        return value

    def to_json(self) -> str:
        """ASCII-only JSON: SQS refuses characters an S3 key may hold (U+FFFE, U+FFFF)."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=True)

    @classmethod
    def parse(cls, text: str | bytes) -> LargeFileMessage:
        """The message in ``text``; ValueError with the reason when it is not a valid one.

        ``type`` and ``version`` must be stated (their defaults are for building a message).
        """
        try:
            msg = cls.model_validate_json(text)
        except ValidationError as err:
            raise ValueError(f"not a valid large_file message: {_reason(err)}") from None
        unstated = [name for name in ("type", "version") if name not in msg.model_fields_set]
        if unstated:
            reason = "; ".join(f"{name}: Field required" for name in unstated)
            raise ValueError(f"not a valid large_file message: {reason}")
        return msg
