"""The failure topic: every whole event the platform cannot process, as one structured document.

Record-level problems go to the rejected-records table; a whole event that cannot be processed
(an unparseable notice, an unknown shape, a handler failing after its retries) is published here
with its reason and its original payload, besides the dead-letter queue that keeps the message
itself. Subscribers (the ``feedlot-failures-inbox`` queue locally, e-mail or a pager on AWS) see
every failure in one place, whatever the source.

Reporting happens inside error paths, so it never raises: a failure to report is logged at
ERROR with the document's summary, so it is never silent either.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.core.contracts import FailureDocument
from feedlot_pipeline.core.settings import Settings

# SNS accepts 256 KiB per message, attributes included: the payload gets at most 200 KiB and the
# document is shrunk further if escaping made it larger than SNS_LIMIT.
MAX_PAYLOAD_BYTES = 200 * 1024
SNS_LIMIT = 250 * 1024
MAX_REASON_CHARS = 4000
TRUNCATION_NOTE = "payload truncated to fit SNS's 256 KiB message limit"

log = logging.getLogger("feedlot.failures")


@lru_cache(maxsize=1)
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("feedlot_pipeline")
    except Exception:  # noqa: BLE001 - informative only
        return "unknown"


def _as_text(payload: Any) -> str:
    """The original payload as text: bytes decoded (invalid UTF-8 replaced), objects as JSON."""
    if payload is None:
        return ""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload).decode("utf-8", errors="replace")
    try:
        return json.dumps(payload, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(payload)


def _cut(text: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of UTF-8, never splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _iso(moment: datetime | None) -> str:
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_document(
    *,
    source: str,
    stage: str,
    reason: str,
    payload: Any,
    event_id: str | None,
    time: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> FailureDocument:
    """The document published on the failure topic (payload capped to ``MAX_PAYLOAD_BYTES``)."""
    text = _as_text(payload)
    size = len(text.encode("utf-8"))
    doc = FailureDocument(
        source=str(source),
        stage=str(stage),
        reason=str(reason)[:MAX_REASON_CHARS],
        event_id=None if event_id is None else str(event_id),
        time=_iso(time),
        payload=text,
        payload_bytes=size,
        host=socket.gethostname(),
        feedlot_version=_version(),
        details={str(k): _plain(v) for k, v in details.items()} if details else None,
    )
    if size > MAX_PAYLOAD_BYTES:
        _truncate(doc, MAX_PAYLOAD_BYTES)
    return doc


def _plain(value: Any) -> Any:
    """A JSON-safe detail value (what json.dumps(default=str) would write)."""
    return json.loads(json.dumps(value, default=str))


def _truncate(doc: FailureDocument, max_bytes: int) -> None:
    doc.payload = _cut(doc.payload, max_bytes)
    doc.payload_truncated = True
    doc.note = TRUNCATION_NOTE


def encode_document(doc: FailureDocument) -> str:
    """JSON text under SNS's limit; JSON escaping can grow a payload, so shrink until it fits."""
    text = _encode(doc)
    budget = MAX_PAYLOAD_BYTES
    while len(text.encode("utf-8")) > SNS_LIMIT and budget > 0:
        budget //= 2
        _truncate(doc, budget)
        text = _encode(doc)
    return text


def _encode(doc: FailureDocument) -> str:
    return json.dumps(doc.to_dict(), default=str, ensure_ascii=False)


def _subject(source: str, stage: str) -> str:
    """SNS subjects: printable ASCII, no line breaks, at most 100 characters."""
    text = f"feedlot failure: {source}/{stage}"
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:100]


def report_failure(
    *,
    source: str,
    stage: str,
    reason: str,
    payload: Any,
    event_id: str | None,
    time: datetime | None = None,
    details: Mapping[str, Any] | None = None,
) -> str | None:
    """Publish one failure document on FEEDLOT_FAILURE_TOPIC; its SNS message id, or None.

    ``source`` says where the event came from (``sensor``, a Lambda's name…), ``stage`` which
    step gave up on it, ``reason`` why. Never raises: a publish that fails is logged at ERROR
    with the document's summary (the event itself stays in its dead-letter queue or failure
    record).
    """
    summary = {"source": source, "stage": stage, "event_id": event_id, "reason": str(reason)[:300]}
    try:
        doc = failure_document(
            source=source,
            stage=stage,
            reason=reason,
            payload=payload,
            event_id=event_id,
            time=time,
            details=details,
        )
        message = encode_document(doc)
        attributes = {
            "source": {"DataType": "String", "StringValue": _cut(str(source), 256) or "-"},
            "stage": {"DataType": "String", "StringValue": _cut(str(stage), 256) or "-"},
        }
        if event_id:
            attributes["event_id"] = {"DataType": "String", "StringValue": _cut(str(event_id), 256)}
        arn = topic_arn(Settings().failure_topic)
        message_id = client("sns").publish(
            TopicArn=arn,
            Message=message,
            Subject=_subject(source, stage),
            MessageAttributes=attributes,
        )["MessageId"]
    except Exception as err:  # noqa: BLE001 - an error path must not raise a second error
        log.error(
            "could not publish a failure document: %s: %s | %s",
            type(err).__name__,
            err,
            json.dumps(summary, default=str),
        )
        return None
    log.warning("failure reported (%s): %s", message_id, json.dumps(summary, default=str))
    return message_id
