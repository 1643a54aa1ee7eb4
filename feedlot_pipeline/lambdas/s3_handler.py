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

Files above ``FEEDLOT_FILEDROP_MAX_BYTES`` are not read here: a ``large_file`` message goes to
the large-file queue, whose sensor (``ingestion.file_sensors``) runs the EC2 worker's bulk import.
Any AWS failure raises, so Lambda's retries (and then its failure destination) take over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.settings import Settings, env
from feedlot_pipeline.ingestion.files import FileStats, iter_chunks
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.lambdas import sns_handler

logger = Logger(service="feedlot-landing-s3")

SOURCE = "file"
LARGE_FILE_TYPE = "large_file"
LARGE_FILE_VERSION = 1
TEST_EVENT = "s3:TestEvent"


class InvalidEvent(ValueError):
    """The Lambda event is not an S3 event notification: a wiring error, not bad data."""


@dataclass(frozen=True)
class FileDropSettings:
    """The file-drop settings, read once per invocation."""

    base: Settings = field(default_factory=Settings)
    input_prefix: str = field(default_factory=lambda: env("FEEDLOT_LANDING_INPUT_PREFIX"))
    max_bytes: int = field(default_factory=lambda: int(env("FEEDLOT_FILEDROP_MAX_BYTES")))
    chunk_records: int = field(default_factory=lambda: int(env("FEEDLOT_FILEDROP_CHUNK_RECORDS")))
    max_record_bytes: int = field(
        default_factory=lambda: int(env("FEEDLOT_FILEDROP_MAX_RECORD_BYTES"))
    )
    large_file_queue: str = field(default_factory=lambda: env("FEEDLOT_LARGE_FILE_QUEUE"))


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

    @property
    def event_id(self) -> str:
        """Same for every announcement of the same object version; new for a new upload."""
        ident = f"{self.bucket}\n{self.key}\n{self.etag}\n{self.version_id or ''}"
        return "file-" + hashlib.sha256(ident.encode()).hexdigest()[:32]

    def chunk_event_id(self, index: int) -> str:
        return f"{self.event_id}-{index:05d}"


def is_test_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("Event") == TEST_EVENT


def dropped_objects(event: Any) -> list[DroppedObject]:
    """The S3 records of a Lambda event; InvalidEvent when it is not an S3 notification."""
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise InvalidEvent("event has no Records list")
    out = []
    for i, rec in enumerate(event["Records"]):
        if not isinstance(rec, dict) or rec.get("eventSource") != "aws:s3":
            raise InvalidEvent(f"Records[{i}] is not an aws:s3 record")
        s3 = rec.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        if not isinstance(bucket, str) or not isinstance(obj.get("key"), str):
            raise InvalidEvent(f"Records[{i}].s3 lacks bucket.name or object.key")
        out.append(
            DroppedObject(
                event_name=str(rec.get("eventName", "")),
                bucket=bucket,
                key=unquote_plus(obj["key"]),
                size=int(obj.get("size") or 0),
                etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
                version_id=obj.get("versionId"),
                sequencer=obj.get("sequencer"),
            )
        )
    return out


def large_file_message(obj: DroppedObject) -> dict:
    """What the large-file sensor receives for a file left to the EC2 worker."""
    return {
        "type": LARGE_FILE_TYPE,
        "version": LARGE_FILE_VERSION,
        "bucket": obj.bucket,
        "key": obj.key,
        "size": obj.size,
        "etag": obj.etag,
        "event_id": obj.event_id,
    }


def _skip(obj: DroppedObject, reason: str) -> dict:
    logger.info("ignored", extra={"bucket": obj.bucket, "key": obj.key, "reason": reason})
    return {"key": obj.key, "status": "ignored", "reason": reason}


def _handoff(obj: DroppedObject, fs: FileDropSettings) -> dict:
    client("sqs").send_message(
        QueueUrl=queue_url(fs.large_file_queue),
        MessageBody=json.dumps(large_file_message(obj)),
    )
    logger.info(
        "large file handed to the worker",
        extra={
            "bucket": obj.bucket,
            "key": obj.key,
            "size": obj.size,
            "max_bytes": fs.max_bytes,
            "event_id": obj.event_id,
            "queue": fs.large_file_queue,
        },
    )
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


def process(obj: DroppedObject, fs: FileDropSettings) -> dict:
    """Land one dropped object (or hand it off, or ignore it) and say what happened."""
    if not obj.event_name.startswith("ObjectCreated"):
        return _skip(obj, f"event {obj.event_name!r} is not ObjectCreated")
    if obj.bucket != fs.base.landing_bucket:
        return _skip(obj, f"bucket is not the landing bucket {fs.base.landing_bucket!r}")
    if not obj.key.startswith(fs.input_prefix):
        return _skip(obj, f"key is outside the input prefix {fs.input_prefix!r}")
    if obj.key.endswith("/"):
        return _skip(obj, "key is a folder marker")
    if fs.max_bytes and obj.size > fs.max_bytes:
        return _handoff(obj, fs)

    got = _open(obj)
    if got is None:
        return _skip(obj, "object is gone or was replaced since the event (a newer one lands)")
    metadata = got.get("Metadata") or {}
    correlation_id = metadata.get("correlation-id") or obj.event_id
    logger.set_correlation_id(correlation_id)
    stats = FileStats()
    keys: list[str] = []
    chunks = 0
    try:
        for index, chunk in enumerate(
            iter_chunks(
                got["Body"],
                obj.key,
                content_type=got.get("ContentType") or "",
                chunk_records=fs.chunk_records,
                max_record_bytes=fs.max_record_bytes,
                stats=stats,
            )
        ):
            notices = land_records(
                chunk,
                source=SOURCE,
                event_id=obj.chunk_event_id(index),
                clients=sns_handler.clients(),
                settings=fs.base,
                correlation_id=correlation_id,
            )
            chunks += 1
            keys.extend(n.key for n in notices)
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
    if stats.records == 0:
        logger.warning("file has no records", extra=summary)
    else:
        logger.info("landed", extra=summary)
    return {"key": obj.key, "status": "landed", "records": stats.records, "landed": keys}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: Any) -> dict:
    """Process each ObjectCreated record of an S3 event notification."""
    if is_test_event(event):
        logger.info("s3:TestEvent ignored", extra={"bucket": event.get("Bucket")})
        return {"ignored": TEST_EVENT}
    objects = dropped_objects(event)
    fs = FileDropSettings()
    return {"files": [process(obj, fs) for obj in objects]}
