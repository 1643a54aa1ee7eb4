"""Lambda for S3 ObjectCreated on the landing bucket: land a dropped file's records, then notify.

Deployed as ``feedlot_pipeline.lambdas.s3_handler.handler`` (an S3 event notification on the
landing bucket, filtered to the input prefix); locally the Lambda bridge of ``feedlot local up``
calls it with the same event (S3 → SNS ``feedlot-file-drops`` → bridge ``/s3``, because moto cannot
invoke Lambda). A file is JSON Lines, a JSON array or CSV, optionally gzip
(``ingestion.files``); it is read as a stream and landed chunk by chunk through
``ingestion.landing.land_records`` (source ``file``), so memory stays bounded whatever its size.

S3's quirks, handled here:
- keys arrive URL-encoded (``unquote_plus``: '+' is a space, ``%2B`` a plus, '/' may be ``%2F``);
- ``s3:TestEvent`` (sent when notifications are configured) is logged and ignored;
- the same object can be announced more than once (multipart uploads, at-least-once delivery):
  each chunk's event id is derived from bucket, key, ETag and version, so a repeat maps to the
  same raw objects, which ``land_records`` never overwrites;
- objects outside ``FEEDLOT_LANDING_INPUT_PREFIX`` or in another bucket are ignored with a log.

Files above ``FEEDLOT_FILEDROP_MAX_BYTES`` are not read here: a ``large_file`` message
(``core.contracts.LargeFileMessage``) goes to the large-file queue, whose sensor
(``worker.sensors``) runs the EC2 worker's bulk import.
Any AWS failure raises, so Lambda's retries (and then its failure destination) take over.

Metrics (``common.landing_metrics``, EMF, dimension Source=file) per file: RecordsReceived,
RecordsLanded, RecordsRejected (unparseable or oversize records, landed as text markers),
LandingLatency (S3's eventTime → landed and announced), LargeFilesHandedOff; LandingFailures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.contracts import LargeFileMessage
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.files import FileStats, iter_chunks
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.lambdas import common
from feedlot_pipeline.lambdas.common import InvalidEvent

logger = Logger(service="feedlot-landing-s3")

SOURCE = "file"
# The large_file contract is ``core.contracts.LargeFileMessage``; these names stay importable
# here until ``worker.sensors`` parses messages with the model.
LARGE_FILE_TYPE: str = LargeFileMessage.model_fields["type"].default
LARGE_FILE_VERSION: int = LargeFileMessage.model_fields["version"].default
TEST_EVENT = "s3:TestEvent"

__all__ = ["LARGE_FILE_TYPE", "LARGE_FILE_VERSION", "InvalidEvent", "handler"]


@dataclass(frozen=True)
class DroppedObject:
    """One ObjectCreated record, key decoded."""

    event_name: str
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    sequencer: str | None
    event_time: datetime | None = None  # when S3 finished the upload (eventTime)

    @property
    def event_id(self) -> str:
        """Same for every announcement of the same object version; new for a new upload."""
        ident = f"{self.bucket}\n{self.key}\n{self.etag}\n{self.version_id or ''}"
        return "file-" + hashlib.sha256(ident.encode()).hexdigest()[:32]

    def chunk_event_id(self, index: int) -> str:
        return f"{self.event_id}-{index:05d}"


def is_test_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("Event") == TEST_EVENT


def check_event(event: Any) -> None:
    """InvalidEvent unless every record is an aws:s3 record with a bucket name and an object key.

    Powertools' ``S3Event`` wraps anything; this keeps a wiring mistake a clear error.
    """
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise InvalidEvent("event has no Records list")
    for i, rec in enumerate(event["Records"]):
        if not isinstance(rec, dict) or rec.get("eventSource") != "aws:s3":
            raise InvalidEvent(f"Records[{i}] is not an aws:s3 record")
        s3 = rec.get("s3")
        bucket = s3.get("bucket") if isinstance(s3, dict) else None
        obj = s3.get("object") if isinstance(s3, dict) else None
        if not (
            isinstance(bucket, dict)
            and isinstance(bucket.get("name"), str)
            and isinstance(obj, dict)
            and isinstance(obj.get("key"), str)
        ):
            raise InvalidEvent(f"Records[{i}].s3 lacks bucket.name or object.key")


def dropped_object(record: S3EventRecord) -> DroppedObject:
    """One checked S3 record, its key URL-decoded (S3 sends keys form-encoded: '+' is a space,
    '%2B' a plus, '/' may arrive as '%2F')."""
    obj = record.s3.get_object
    return DroppedObject(
        event_name=str(record.get("eventName") or ""),
        bucket=record.s3.bucket.name,
        key=unquote_plus(obj.key),
        size=int(obj.get("size") or 0),  # absent on ObjectRemoved
        etag=(obj.etag or str(obj.get("etag") or "")).strip('"'),
        version_id=obj.version_id,
        sequencer=obj.get("sequencer"),
        event_time=common.event_time(record.get("eventTime")),
    )


def large_file_message(obj: DroppedObject) -> LargeFileMessage:
    """What the large-file sensor receives for a file left to the EC2 worker."""
    return LargeFileMessage(
        bucket=obj.bucket, key=obj.key, size=obj.size, etag=obj.etag, event_id=obj.event_id
    )


def _skip(obj: DroppedObject, reason: str) -> dict:
    logger.info("ignored", extra={"bucket": obj.bucket, "key": obj.key, "reason": reason})
    return {"key": obj.key, "status": "ignored", "reason": reason}


def _handoff(obj: DroppedObject, s: Settings, metrics: common.LandingMetrics) -> dict:
    client("sqs").send_message(
        QueueUrl=queue_url(s.large_file_queue), MessageBody=large_file_message(obj).to_json()
    )
    logger.info(
        "large file handed to the worker",
        extra={
            "bucket": obj.bucket,
            "key": obj.key,
            "size": obj.size,
            "max_bytes": s.filedrop_max_bytes,
            "event_id": obj.event_id,
            "queue": s.large_file_queue,
        },
    )
    metrics.add("LargeFilesHandedOff", 1)
    return {"key": obj.key, "status": "large_file", "event_id": obj.event_id}


def _open(obj: DroppedObject) -> dict | None:
    """get_object of exactly the announced version; None when it is gone or was replaced."""
    s3 = client("s3")
    kwargs: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
    if obj.version_id and obj.version_id != "null":
        kwargs["VersionId"] = obj.version_id
    elif obj.etag:
        kwargs["IfMatch"] = f'"{obj.etag}"'
    try:
        return s3.get_object(**kwargs)
    except s3.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "PreconditionFailed", "412", "NoSuchVersion"):
            return None
        raise


def process(obj: DroppedObject, s: Settings, metrics: common.LandingMetrics | None = None) -> dict:
    """Land one dropped object (or hand it off, or ignore it) and say what happened."""
    metrics = metrics or common.LandingMetrics(SOURCE)  # a caller's own; unflushed here
    if not obj.event_name.startswith("ObjectCreated"):
        return _skip(obj, f"event {obj.event_name!r} is not ObjectCreated")
    if obj.bucket != s.landing_bucket:
        return _skip(obj, f"bucket is not the landing bucket {s.landing_bucket!r}")
    if not obj.key.startswith(s.landing_input_prefix):
        return _skip(obj, f"key is outside the input prefix {s.landing_input_prefix!r}")
    if obj.key.endswith("/"):
        return _skip(obj, "key is a folder marker")
    if s.filedrop_max_bytes and obj.size > s.filedrop_max_bytes:
        return _handoff(obj, s, metrics)

    got = _open(obj)
    if got is None:
        return _skip(obj, "object is gone or was replaced since the event (a newer one lands)")
    metadata = got.get("Metadata") or {}
    correlation_id = metadata.get("correlation-id") or obj.event_id
    logger.set_correlation_id(correlation_id)
    stats = FileStats()
    keys: list[str] = []
    chunks = 0
    landed = 0
    try:
        for index, chunk in enumerate(
            iter_chunks(
                got["Body"],
                obj.key,
                content_type=got.get("ContentType") or "",
                chunk_records=s.filedrop_chunk_records,
                max_record_bytes=s.filedrop_max_record_bytes,
                stats=stats,
            )
        ):
            notices = land_records(
                chunk,
                source=SOURCE,
                event_id=obj.chunk_event_id(index),
                clients=common.client_map(),
                settings=s,
                correlation_id=correlation_id,
            )
            chunks += 1
            keys.extend(n.key for n in notices)
            landed += sum(n.records for n in notices)
    finally:
        got["Body"].close()
    summary = {
        "bucket": obj.bucket,
        "key": obj.key,
        "size": obj.size,
        "event_id": obj.event_id,
        "format": stats.kind,
        "gzip": stats.gzip,
        "records": stats.records,
        "unparsed": stats.unparsed,
        "oversize": stats.oversize,
        "chunks": chunks,
        "objects": len(keys),
        "notes": stats.notes,
    }
    metrics.add("RecordsReceived", stats.records)
    metrics.add("RecordsLanded", landed)
    metrics.add("RecordsRejected", stats.unparsed + stats.oversize)
    metrics.latency_since(obj.event_time)
    if stats.records == 0:
        logger.warning("file has no records", extra=summary)
    else:
        logger.info("landed", extra=summary)
    return {"key": obj.key, "status": "landed", "records": stats.records, "landed": keys}


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=S3Event)
def handler(event: S3Event, context: Any) -> dict:
    """Process each ObjectCreated record of an S3 event notification."""
    raw = event.raw_event
    if is_test_event(raw):
        logger.info("s3:TestEvent ignored", extra={"bucket": raw.get("Bucket")})
        return {"ignored": TEST_EVENT}
    with common.landing_metrics(SOURCE) as metrics:
        check_event(raw)
        objects = [dropped_object(record) for record in event.records]
        s = common.settings()
        return {"files": [process(obj, s, metrics) for obj in objects]}
