"""Land raw records in the lake and announce them on the sensor queue.

Shared by every source's Lambda (SNS now; API Gateway and S3 drops later): a source turns its
event into a list of raw JSON values plus an event id, and this module does the rest. Objects are
keyed by the event id, so a redelivered event overwrites nothing and lands nothing twice; the
notice is sent again regardless (the first attempt may have died between landing and notifying)
and the sensor drops notices it has already recorded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

import orjson

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.lake import raw_object_key
from feedlot_pipeline.core.records import route
from feedlot_pipeline.core.settings import Settings

SQS_BATCH = 10


# An SNS body may wrap its records with their correlation id: {"correlation_id": …, "records": […]}.
# The id travels as a message attribute too, but moto's HTTP delivery drops attributes (and a
# subscriber without raw delivery or an attribute-less republish loses them); the body survives.
ENVELOPE_KEYS = frozenset({"records", "correlation_id"})
MAX_CORRELATION_ID = 256


def envelope(records: Sequence[bytes], correlation_id: str) -> bytes:
    """The body of an SNS message: the (JSON-encoded) records with their correlation id."""
    return (
        b'{"correlation_id":'
        + orjson.dumps(correlation_id)
        + b',"records":['
        + b",".join(records)
        + b"]}"
    )


def split_message(body: str) -> tuple[list[Any], str | None]:
    """The records in a message body and the correlation id of its envelope (None without one).

    A body is an envelope (an object of ``records``, a list, and optionally ``correlation_id``:
    no consumption record has those fields), a JSON array, one JSON object or JSON Lines. A body
    that is none of these is kept whole as one text value, so it lands (and is later rejected
    with its reason) instead of vanishing.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) < 2:
            return [body], None
        return [_line_value(line) for line in lines], None
    if isinstance(parsed, list):
        return parsed, None
    if (
        isinstance(parsed, dict)
        and "records" in parsed
        and isinstance(parsed["records"], list)
        and set(parsed) <= ENVELOPE_KEYS
    ):
        corr = parsed.get("correlation_id")
        valid = isinstance(corr, str) and 0 < len(corr) <= MAX_CORRELATION_ID
        return parsed["records"], corr if valid else None
    return [parsed], None


def split_body(body: str) -> list[Any]:
    """The records in a message body (``split_message`` without the correlation id)."""
    return split_message(body)[0]


def _line_value(line: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line


def encode_raw(raw: Any) -> bytes:
    """One raw-zone line; a value orjson cannot write (an int beyond 64 bits) keeps its text."""
    try:
        return orjson.dumps(raw)
    except TypeError:
        return orjson.dumps(str(raw))


def land_records(
    records: Sequence[Any],
    *,
    source: str,
    event_id: str,
    clients: Mapping[str, str],
    settings: Settings | None = None,
    correlation_id: str | None = None,
    received_at: datetime | None = None,
) -> list[LandingNotice]:
    """Write one raw object per (farm, day) of ``records`` and notify the sensor queue.

    Returns the notices sent. Raises on any AWS failure so the caller's platform retries.
    """
    s = settings or Settings()
    now = received_at or datetime.now(timezone.utc)
    bounds = s.valid_days(now.date())
    groups: dict[tuple[str, date], list[bytes]] = {}
    for raw in records:
        where = route(raw, clients, now.date(), bounds)
        groups.setdefault((where.fazenda, where.dia), []).append(encode_raw(raw))

    s3 = client("s3")
    notices: list[LandingNotice] = []
    for (fazenda, dia), lines in groups.items():
        key = raw_object_key(fazenda, dia, source, event_id)
        _put_once(
            s3,
            Bucket=s.lake_bucket,
            Key=key,
            Body=b"\n".join(lines) + b"\n",
            ContentType="application/x-ndjson",
            Metadata={
                "source": source,
                "event-id": event_id[:200],
                "correlation-id": (correlation_id or event_id)[:200],
                "records": str(len(lines)),
                "received-at": now.isoformat(),
            },
        )
        notices.append(
            LandingNotice(
                bucket=s.lake_bucket,
                key=key,
                fazenda=fazenda,
                dia=dia.isoformat(),
                records=len(lines),
                source=source,
                event_id=event_id,
                landed_at=now.isoformat(),
                correlation_id=correlation_id or event_id,
            )
        )
    send_notices(notices, s)
    return notices


def _put_once(s3: Any, **request: Any) -> bool:
    """Write the object unless the key exists (a conditional write, one request): whether it was
    written. A redelivered event keeps its first landing, its time included."""
    try:
        s3.put_object(IfNoneMatch="*", **request)
    except s3.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return False
        raise
    return True


def send_notices(notices: Sequence[LandingNotice], settings: Settings | None = None) -> None:
    """Send notices in batches of 10, retrying entries SQS reports as failed."""
    if not notices:
        return
    s = settings or Settings()
    sqs = client("sqs")
    url = queue_url(s.sensor_queue)
    for start in range(0, len(notices), SQS_BATCH):
        entries = [
            {"Id": str(i), "MessageBody": n.to_json()}
            for i, n in enumerate(notices[start : start + SQS_BATCH])
        ]
        for attempt in range(5):
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            if not failed:
                break
            ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in ids]
            time.sleep(0.2 * 2**attempt)
        else:
            raise RuntimeError(f"could not notify the sensor queue: {failed}")
