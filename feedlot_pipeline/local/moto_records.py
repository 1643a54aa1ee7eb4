"""What a journal record of the local moto holds, read from moto and put back into it.

One pair per kind: ``capture_*`` reads the current state of a bucket, an object, a queue or a
queue's messages out of moto's backends into journal records (``journal.encode``: a JSON header
and a body), ``replay_*`` recreates it in a fresh moto. This is the part that knows moto's
internals (``FakeKey``, ``Message``, backend attributes), so a moto upgrade that moves them is
fixed here; *when* to capture is ``moto_journal``'s business.

What is kept: every bucket (and its configuration: encryption, public access block, notification
configuration…) with the current version of each object (bytes, user metadata, content type,
ETag, Last-Modified, tags, checksum, encryption); the durable queues with their attributes and
messages (body, message attributes, sent time, receive count).
"""

from __future__ import annotations

import base64
import logging
import pickle
import threading
from datetime import datetime
from typing import Any

from feedlot_pipeline.local.journal import encode

log = logging.getLogger("feedlot.moto")

KINDS = ("bucket", "object", "queue", "message")  # replay order: parents first
# Bucket configuration kept with the bucket (pickled moto objects; provisioning sets it again
# on every `feedlot local up`, so a configuration that cannot be restored is only logged).
BUCKET_CONFIG = (
    "versioning_status",
    "rules",
    "policy",
    "website_configuration",
    "acl",
    "cors",
    "logging",
    "notification_configuration",
    "accelerate_configuration",
    "payer",
    "creation_date",
    "public_access_block",
    "encryption",
    "object_lock_enabled",
    "default_lock_mode",
    "default_lock_days",
    "default_lock_years",
    "ownership_rule",
)
# Queue attributes that cannot be set (moto computes them).
READ_ONLY_QUEUE_ATTRIBUTES = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
}


# --- JSON with bytes -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-able: bytes become {"$b64": …}, tuples lists, sets sorted lists."""
    if isinstance(value, bytes | bytearray):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    return value


def _restored(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b64"}:
            return base64.b64decode(value["$b64"])
        return {k: _restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value


def deleted(kind: str, ident: list[str]) -> bytes:
    """The record saying ``kind`` ``ident`` is gone (with its objects or messages)."""
    return encode({"k": kind, "op": "del", "id": ident})


# --- S3 ------------------------------------------------------------------------------------------


def s3_backend(account: str, partition: str) -> Any:
    """moto's S3 backend of an account and partition (S3 is global within a partition)."""
    from moto.s3.models import s3_backends

    return s3_backends[account][partition]


def capture_bucket(account: str, partition: str, name: str) -> list[bytes]:
    """The bucket's record (region, pickled configuration), or its deletion."""
    ident = [account, partition, name]
    bucket = s3_backend(account, partition).buckets.get(name)
    if bucket is None:
        return [deleted("bucket", ident)]
    config = {attr: getattr(bucket, attr) for attr in BUCKET_CONFIG if hasattr(bucket, attr)}
    try:
        body = pickle.dumps(config)
    except Exception as err:  # noqa: BLE001 - kept without its configuration
        log.warning("bucket %s: configuration not kept (%s)", name, err)
        body = b""
    return [encode({"k": "bucket", "id": ident, "region": bucket.region_name}, body)]


def capture_object(account: str, partition: str, bucket_name: str, key_name: str) -> list[bytes]:
    """The object's current version (bytes and what S3 keeps with them), or its deletion."""
    from moto.s3.models import FakeKey

    ident = [account, partition, bucket_name, key_name]
    backend = s3_backend(account, partition)
    bucket = backend.buckets.get(bucket_name)
    key = bucket.keys.get(key_name) if bucket is not None else None
    if not isinstance(key, FakeKey):  # gone, or a delete marker
        return [deleted("object", ident)]
    try:
        value = key.value
        etag = key.etag.strip('"')
    except ValueError:  # replaced by a concurrent request since: that request journals it
        return []
    header = {
        "k": "object",
        "id": ident,
        "metadata": _plain(dict(key.metadata)),
        "etag": etag,
        "last_modified": key.last_modified.isoformat(),
    }
    optional = {  # written only when set: a smaller header is a faster replay
        "storage": None if key._storage_class == "STANDARD" else key._storage_class,
        "version_id": None if key._version_id == "null" else key._version_id,
        "encryption": key.encryption,
        "kms_key_id": key.kms_key_id,
        "bucket_key_enabled": _plain(key.bucket_key_enabled) or None,
        "lock": [key.lock_mode, key.lock_legal_status, key.lock_until],
        "checksum": [
            key.checksum_algorithm,
            key.checksum_value,
            key.checksum_type,
            key.checksum_parts,
        ],
        "website_redirect_location": key.website_redirect_location,
        "tags": backend.tagger.get_tag_dict_for_resource(key.arn),
    }
    header |= {
        name: value
        for name, value in optional.items()
        if value and (not isinstance(value, list) or any(value))
    }
    return [encode(header, value)]


def replay_bucket(header: dict, body: bytes) -> None:
    """Create the bucket (if missing) and set its configuration back."""
    account, partition, name = header["id"]
    backend = s3_backend(account, partition)
    bucket = backend.buckets.get(name) or backend.create_bucket(name, header["region"])
    if not body:
        return
    try:
        config = pickle.loads(body)  # noqa: S301 - our own journal, in our own state folder
    except Exception as err:  # noqa: BLE001 - provisioning sets it again
        log.warning("bucket %s: configuration not restored (%s)", name, err)
        return
    for attr, value in config.items():
        setattr(bucket, attr, value)


def replay_object(backend: Any, header: dict, body: bytes) -> None:
    """Put the object back as it was (no event notification: it is not a new object)."""
    bucket_name, key_name = header["id"][2:]
    lock_mode, lock_legal_status, lock_until = header.get("lock") or (None, None, None)
    algorithm, checksum, checksum_type, parts = header.get("checksum") or (None,) * 4
    key = backend.put_object(
        bucket_name,
        key_name,
        body,
        storage=header.get("storage"),
        etag=header["etag"],
        encryption=header.get("encryption"),
        kms_key_id=header.get("kms_key_id"),
        bucket_key_enabled=_restored(header.get("bucket_key_enabled")),
        lock_mode=lock_mode,
        lock_legal_status=lock_legal_status,
        lock_until=lock_until,
        checksum_value=checksum,
        disable_notification=True,  # a replayed object is not a new one
    )
    metadata = key._metadata
    for name, value in _restored(header["metadata"]).items():
        metadata[name] = value
    key.last_modified = datetime.fromisoformat(header["last_modified"])
    if "version_id" in header:
        key._version_id = header["version_id"]
    if algorithm or checksum_type or parts:
        key.checksum_algorithm, key.checksum_type = algorithm, checksum_type
        key.checksum_parts = parts
    key.website_redirect_location = header.get("website_redirect_location")
    if header.get("tags"):
        backend.tagger.tag_resource(
            key.arn, [{"Key": k, "Value": v} for k, v in header["tags"].items()]
        )


# --- SQS -----------------------------------------------------------------------------------------


def capture_queue(account: str, region: str, name: str) -> bytes | None:
    """The queue's record (attributes, tags; not its messages); None when moto has no such queue."""
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[account][region].queues.get(name)
    if queue is None:
        return None
    attributes = {
        key: value if isinstance(value, str) else str(value)
        for key, value in queue.attributes.items()
        if key not in READ_ONLY_QUEUE_ATTRIBUTES and value is not None
    }
    header = {
        "k": "queue",
        "id": [account, region, name],
        "attributes": attributes,
        "tags": dict(queue.tags),
    }
    return encode(header)


def capture_messages(
    journaled: dict[tuple[str, str, str], set[str]], account: str, region: str, name: str
) -> list[bytes]:
    """Records of the queue's messages the journal does not hold yet, and deletions of those it
    holds that are gone; ``journaled`` (queue → ids the journal holds) is kept up to date.

    Cheap when only tracked changes happened since the last capture (messages added through
    ``Queue.add_message``, deleted through ``Queue.delete_message``): those are journaled
    without looking at the rest of the queue, whose backlog may be tens of thousands. Anything
    else (a receive that moved messages to the DLQ or dropped expired ones, a purge, or counts
    that do not add up because another request is half-way) compares the whole queue.
    """
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[account][region].queues.get(name)
    if queue is None:
        return []
    held = journaled.setdefault((account, region, name), set())
    with _TRACK_LOCK:
        added = queue.__dict__.pop(_ADDED, [])
        removed = queue.__dict__.pop(_REMOVED, [])
        untracked = queue.__dict__.pop(_UNTRACKED, True)
        new = [m for m in dict((m.id, m) for m in added).values() if m.id not in held]
        gone = {i for i in removed if i in held} - {m.id for m in new}
        if not untracked and len(queue._messages) == len(held) + len(new) - len(gone):
            records = [_message_record(account, region, name, m) for m in new]
            held.update(m.id for m in new)
            records.extend(deleted("message", [account, region, name, i]) for i in gone)
            held -= gone
            return records
    current = list(queue._messages)
    records = []
    for message in current:
        if message.id not in held:
            records.append(_message_record(account, region, name, message))
            held.add(message.id)
    gone = held - {m.id for m in current}
    for message_id in gone:
        records.append(deleted("message", [account, region, name, message_id]))
    held -= gone
    return records


# Changes to a durable queue since its last capture, kept on moto's Queue object.
_ADDED, _REMOVED, _UNTRACKED = "_journal_added", "_journal_removed", "_journal_untracked"
_TRACK_LOCK = threading.Lock()
TRACKING = {"on": False}  # set by the journal's hooks; a moto without a journal keeps no lists
# SQS backend calls whose removals are tracked one by one (through Queue.delete_message).
TRACKED_REMOVALS = ("delete_message", "delete_message_batch")


def note_added(queue: Any, message: Any) -> None:
    if not TRACKING["on"]:
        return
    with _TRACK_LOCK:
        queue.__dict__.setdefault(_ADDED, []).append(message)


def note_removed(queue: Any, message_id: str) -> None:
    if not TRACKING["on"]:
        return
    with _TRACK_LOCK:
        queue.__dict__.setdefault(_REMOVED, []).append(message_id)


def note_untracked(queue: Any) -> None:
    """Messages may have gone another way: the next capture compares the whole queue."""
    if queue is not None:
        with _TRACK_LOCK:
            queue.__dict__[_UNTRACKED] = True


def _message_record(account: str, region: str, queue: str, message: Any) -> bytes:
    header = {
        "k": "message",
        "id": [account, region, queue, message.id],
        "message_attributes": _plain(message.message_attributes),
        "system_attributes": _plain(message.system_attributes),
        "sender_id": message.sender_id,
        "sent_timestamp": message.sent_timestamp,
        "first_receive_timestamp": message.approximate_first_receive_timestamp,
        "receive_count": message.approximate_receive_count,
        "deduplication_id": message.deduplication_id,
        "group_id": message.group_id,
        "sequence_number": message.sequence_number,
        "delayed_until": message.delayed_until,
    }
    return encode(header, message.body.encode("utf-8"))


def replay_queue(header: dict) -> None:
    """Create the queue (or set its attributes) and its tags."""
    from moto.sqs.models import sqs_backends

    account, region, name = header["id"]
    backend = sqs_backends[account][region]
    attributes = dict(header["attributes"])
    if name in backend.queues:
        backend.set_queue_attributes(name, attributes)
    else:
        try:
            backend.create_queue(name, **attributes)
        except Exception as err:  # noqa: BLE001 - e.g. a redrive target that is not kept
            log.warning("queue %s: created without its redrive policy (%s)", name, err)
            attributes.pop("RedrivePolicy", None)
            backend.create_queue(name, **attributes)
    backend.queues[name].tags = dict(header.get("tags") or {})


def replay_message(header: dict, body: bytes) -> None:
    """Put the message back at the end of its queue, visible, with its counters."""
    from moto.sqs.models import Message, sqs_backends

    account, region, name, message_id = header["id"]
    queue = sqs_backends[account][region].queues[name]
    message = Message(message_id, body.decode("utf-8"), _restored(header["system_attributes"]))
    message.message_attributes = _restored(header["message_attributes"])
    message.sender_id = header["sender_id"]
    message.sent_timestamp = header["sent_timestamp"]
    message.approximate_first_receive_timestamp = header["first_receive_timestamp"]
    message.approximate_receive_count = header["receive_count"]
    message.deduplication_id = header["deduplication_id"]
    message.group_id = header["group_id"]
    message.sequence_number = header["sequence_number"]
    message.delayed_until = header["delayed_until"]
    queue._messages.append(message)  # visible at once, as after a receive's timeout
