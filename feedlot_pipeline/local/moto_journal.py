"""moto's side of the durable local lake: which changes to journal, how to capture and replay them.

Runs inside the local stack's moto process (``moto_server.py``). Hooks on moto's S3 and SQS
backends note what a request changes — an S3 object, a bucket, a durable queue or its messages —
whichever path changed it: a PutObject, a CopyObject, a completed multipart upload, Firehose
delivering into a bucket, SNS delivering a failure document to the inbox queue, SQS moving a
message to its dead-letter queue. When the request has been handled and before its answer is
sent (``JournaledApp``), the *resulting state* of what it touched is read from moto and appended
to the journal (``journal.py``). So an answered write is on disk, and a write that was never
answered may be lost, as with S3 itself.

What is kept: every bucket (and its configuration: encryption, public access block, notification
configuration…) with the current version of each object (bytes, user metadata, content type,
ETag, Last-Modified, tags, checksum, encryption); the durable queues named at start (dead-letter
queues and the failures inbox) with their attributes and messages (body, message attributes,
sent time, receive count). Not kept: other queues (a notice still queued for the sensor is lost
with moto; ``lake_sweep_sensor`` loads raw objects missing from the load ledger), SNS, EC2, SSM,
Firehose (``feedlot local up`` provisions them again), older versions in a versioned bucket,
in-progress multipart uploads.
"""

from __future__ import annotations

import base64
import inspect
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from feedlot_pipeline.local.journal import RESET, Index, Journal, encode

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
# S3 backend methods that change buckets or objects (the others read). Objects changed inside
# another method (copy_object → put_object, delete_objects → delete_object, Firehose →
# put_object) are seen through the inner call.
S3_CHANGES = (
    "create_bucket",
    "delete_bucket",
    "put_bucket_",
    "delete_bucket_",
    "put_public_access_block",
    "delete_public_access_block",
    "put_object",
    "put_object_",
    "delete_object",
    "delete_object_",
    "complete_multipart_upload",
    "restore_object",
)
SQS_QUEUE_CHANGES = (
    "create_queue",
    "delete_queue",
    "set_queue_attributes",
    "tag_queue",
    "untag_queue",
)
SQS_MESSAGE_CHANGES = (
    "delete_message",
    "delete_message_batch",
    "purge_queue",
    "receive_message",  # moves messages to the dead-letter queue; drops expired ones
)

Ref = tuple  # ("object", account, partition, bucket, key) | ("bucket", account, partition,
# bucket) | ("queue", account, region, name) | ("message", account, region, name)


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


# --- the state ----------------------------------------------------------------------------------


class DurableState:
    """What one moto process journals; ``begin``/``end`` bracket each request."""

    def __init__(self, journal: Journal, durable_queues: Iterable[str]) -> None:
        self.journal = journal
        self.queues = frozenset(durable_queues)
        self._local = threading.local()
        self._orphans: set[Ref] = set()
        self._orphans_lock = threading.Lock()
        # (account, region, queue) → ids of its messages the journal holds
        self._journaled: dict[tuple[str, str, str], set[str]] = {}
        self.stats: dict[str, Any] = {}

    # --- request scope --------------------------------------------------------------------------

    def begin(self) -> None:
        self._local.refs = set()

    def end(self) -> None:
        refs: set[Ref] = getattr(self._local, "refs", None) or set()
        self._local.refs = None
        if self._orphans:
            with self._orphans_lock:
                refs |= self._orphans
                self._orphans = set()
        if refs:
            self.commit(refs)

    def touch(self, ref: Ref) -> None:
        refs = getattr(self._local, "refs", None)
        if refs is not None:
            refs.add(ref)
        else:  # a change outside a request: the next request (or close) writes it
            with self._orphans_lock:
                self._orphans.add(ref)

    def commit(self, refs: Iterable[Ref]) -> None:
        """Append the current state of ``refs``; return once it is durable."""
        with self.journal.locked():
            records: list[bytes] = []
            for ref in sorted(refs, key=lambda r: KINDS.index(r[0])):
                records.extend(self._capture(ref))
            end = self.journal.write(records)
        self.journal.sync(end)

    def reset(self) -> None:
        """moto's own reset (``/moto-api/reset``) emptied every backend: so is the journal."""
        with self.journal.locked():
            end = self.journal.write([encode({"k": RESET})])
            self._journaled.clear()
        self.journal.sync(end)

    def close(self) -> None:
        self.end()
        self.journal.close()

    # --- capture --------------------------------------------------------------------------------

    def _capture(self, ref: Ref) -> list[bytes]:
        kind = ref[0]
        if kind == "object":
            return _capture_object(*ref[1:])
        if kind == "bucket":
            return _capture_bucket(*ref[1:])
        if kind == "queue":
            return self._capture_queue(*ref[1:])
        return self._capture_messages(*ref[1:])

    def _capture_queue(self, account: str, region: str, name: str) -> list[bytes]:
        from moto.sqs.models import sqs_backends

        ident = [account, region, name]
        queue = sqs_backends[account][region].queues.get(name)
        if queue is None:
            self._journaled.pop((account, region, name), None)
            return [encode({"k": "queue", "op": "del", "id": ident})]
        attributes = {
            key: value if isinstance(value, str) else str(value)
            for key, value in queue.attributes.items()
            if key not in READ_ONLY_QUEUE_ATTRIBUTES and value is not None
        }
        header = {"k": "queue", "id": ident, "attributes": attributes, "tags": dict(queue.tags)}
        return [encode(header), *self._capture_messages(account, region, name)]

    def _capture_messages(self, account: str, region: str, name: str) -> list[bytes]:
        from moto.sqs.models import sqs_backends

        queue = sqs_backends[account][region].queues.get(name)
        if queue is None:
            return []
        held = self._journaled.setdefault((account, region, name), set())
        current = list(queue._messages)
        records = []
        for message in current:
            if message.id not in held:
                records.append(_message_record(account, region, name, message))
                held.add(message.id)
        gone = held - {m.id for m in current}
        for message_id in gone:
            records.append(
                encode({"k": "message", "op": "del", "id": [account, region, name, message_id]})
            )
        held -= gone
        return records

    # --- replay ---------------------------------------------------------------------------------

    def replay(self, index: Index) -> dict[str, Any]:
        """Put the journal's live records into this (fresh) moto; returns counts and time."""
        started = time.monotonic()
        counts = dict.fromkeys(KINDS, 0)
        size = 0
        backends: dict[tuple[str, str], Any] = {}
        for header, body in self.journal.replay_order(index, KINDS):
            kind = header["k"]
            if kind == "bucket":
                _replay_bucket(header, body)
            elif kind == "object":
                where = (header["id"][0], header["id"][1])
                if where not in backends:
                    backends[where] = _s3_backend(*where)
                _replay_object(backends[where], header, body)
                size += len(body)
            elif kind == "queue":
                _replay_queue(header)
            else:
                _replay_message(header, body)
                account, region, name, message_id = header["id"]
                self._journaled.setdefault((account, region, name), set()).add(message_id)
            counts[kind] += 1
        self.stats = {
            "buckets": counts["bucket"],
            "objects": counts["object"],
            "object_bytes": size,
            "queues": counts["queue"],
            "messages": counts["message"],
            "seconds": round(time.monotonic() - started, 3),
        }
        return self.stats

    # --- hooks ----------------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap moto's S3 and SQS backends so that changes are noted (``touch``)."""
        from moto.s3.models import S3Backend
        from moto.sqs.models import Queue, SQSBackend

        for name, method in list(vars(S3Backend).items()):
            if callable(method) and _is_s3_change(name):
                setattr(S3Backend, name, self._s3_hook(method))
        for name in (*SQS_QUEUE_CHANGES, *SQS_MESSAGE_CHANGES):
            setattr(SQSBackend, name, self._sqs_hook(getattr(SQSBackend, name), name))
        add_message = Queue.add_message
        state = self

        def add_message_hook(queue: Any, message: Any) -> None:
            try:
                add_message(queue, message)
            finally:
                if queue.name in state.queues:
                    state.touch(("message", queue.account_id, queue.region, queue.name))

        Queue.add_message = add_message_hook

    def _s3_hook(self, method: Callable) -> Callable:
        params = list(inspect.signature(method).parameters)[1:]  # after self
        state = self

        def arg(args: tuple, kwargs: dict, name: str) -> Any:
            if name in kwargs:
                return kwargs[name]
            position = params.index(name) if name in params else len(args)
            return args[position] if position < len(args) else None

        def hook(backend: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(backend, *args, **kwargs)
            finally:
                where = (backend.account_id, backend.region_name)
                key = arg(args, kwargs, "key")
                if key is not None and hasattr(key, "bucket_name"):
                    state.touch(("object", *where, key.bucket_name, key.name))
                elif arg(args, kwargs, "key_name") is not None:
                    bucket = arg(args, kwargs, "bucket_name")
                    state.touch(("object", *where, bucket, arg(args, kwargs, "key_name")))
                elif arg(args, kwargs, "dest_key_name") is not None:
                    bucket = arg(args, kwargs, "dest_bucket_name")
                    state.touch(("object", *where, bucket, arg(args, kwargs, "dest_key_name")))
                elif arg(args, kwargs, "bucket_name") is not None:
                    state.touch(("bucket", *where, arg(args, kwargs, "bucket_name")))

        hook.__wrapped__ = method  # type: ignore[attr-defined]
        return hook

    def _sqs_hook(self, method: Callable, name: str) -> Callable:
        params = list(inspect.signature(method).parameters)[1:]
        queue_level = name in SQS_QUEUE_CHANGES
        state = self

        def hook(backend: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(backend, *args, **kwargs)
            finally:
                queue = kwargs.get(params[0]) if params[0] in kwargs else (args[:1] or [None])[0]
                if queue in state.queues:
                    where = (backend.account_id, backend.region_name, queue)
                    state.touch(("message", *where))
                    if queue_level:
                        state.touch(("queue", *where))

        hook.__wrapped__ = method  # type: ignore[attr-defined]
        return hook


def _is_s3_change(name: str) -> bool:
    return any(name == c or (c.endswith("_") and name.startswith(c)) for c in S3_CHANGES)


# --- S3 ------------------------------------------------------------------------------------------


def _s3_backend(account: str, partition: str) -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[account][partition]


def _capture_bucket(account: str, partition: str, name: str) -> list[bytes]:
    ident = [account, partition, name]
    bucket = _s3_backend(account, partition).buckets.get(name)
    if bucket is None:
        return [encode({"k": "bucket", "op": "del", "id": ident})]
    config = {attr: getattr(bucket, attr) for attr in BUCKET_CONFIG if hasattr(bucket, attr)}
    try:
        body = pickle.dumps(config)
    except Exception as err:  # noqa: BLE001 - kept without its configuration
        log.warning("bucket %s: configuration not kept (%s)", name, err)
        body = b""
    return [encode({"k": "bucket", "id": ident, "region": bucket.region_name}, body)]


def _capture_object(account: str, partition: str, bucket_name: str, key_name: str) -> list[bytes]:
    from moto.s3.models import FakeKey

    ident = [account, partition, bucket_name, key_name]
    backend = _s3_backend(account, partition)
    bucket = backend.buckets.get(bucket_name)
    key = bucket.keys.get(key_name) if bucket is not None else None
    if not isinstance(key, FakeKey):  # gone, or a delete marker
        return [encode({"k": "object", "op": "del", "id": ident})]
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


def _replay_bucket(header: dict, body: bytes) -> None:
    account, partition, name = header["id"]
    backend = _s3_backend(account, partition)
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


def _replay_object(backend: Any, header: dict, body: bytes) -> None:
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


def _replay_queue(header: dict) -> None:
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


def _replay_message(header: dict, body: bytes) -> None:
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


# --- the WSGI side -------------------------------------------------------------------------------


class JournaledApp:
    """moto's WSGI application, with each request's changes journaled before it is answered.

    The werkzeug server sends nothing before the application returns its response, so a client
    never sees a success for a change that is not in the journal: when writing the journal
    fails, the client gets a 500 instead.
    """

    def __init__(self, app: Any, state: DurableState) -> None:
        self.app = app
        self.state = state

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        self.state.begin()
        try:
            response = self.app(environ, start_response)
        finally:
            self.state.end()
        if environ.get("PATH_INFO", "").rstrip("/") == "/moto-api/reset":
            self.state.reset()
        return response
