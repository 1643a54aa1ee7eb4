"""moto's side of the durable local lake: which changes to journal, when, and replaying them.

Runs inside the local stack's moto process (``moto_server.py``). Hooks on moto's S3 and SQS
backends note what a request changes — an S3 object, a bucket, a durable queue or its messages —
whichever path changed it: a PutObject, a CopyObject, a completed multipart upload, Firehose
delivering into a bucket, SNS delivering a failure document to the inbox queue, SQS moving a
message to its dead-letter queue. When the request has been handled and before its answer is
sent (``JournaledApp``), the *resulting state* of what it touched is read from moto and appended
to the journal (``journal.py``). So an answered write is on disk, and a write that was never
answered may be lost, as with S3 itself.

What a record holds, and how it is read from moto and put back, is ``moto_records``. What is
kept: every bucket (and its configuration: encryption, public access block, notification
configuration…) with the current version of each object (bytes, user metadata, content type,
ETag, Last-Modified, tags, checksum, encryption); the durable queues named at start (dead-letter
queues and the failures inbox) with their attributes and messages (body, message attributes,
sent time, receive count). Not kept: other queues (a notice still queued for the sensor is lost
with moto; ``lake_sweep_sensor`` loads raw objects missing from the load ledger), SNS, EC2, SSM,
Firehose (``feedlot local up`` provisions them again), older versions in a versioned bucket,
in-progress multipart uploads.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from feedlot_pipeline.local import moto_records
from feedlot_pipeline.local.journal import RESET, Index, Journal, encode
from feedlot_pipeline.local.moto_records import KINDS

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
            return moto_records.capture_object(*ref[1:])
        if kind == "bucket":
            return moto_records.capture_bucket(*ref[1:])
        if kind == "queue":
            return self._capture_queue(*ref[1:])
        return self._capture_messages(*ref[1:])

    def _capture_queue(self, account: str, region: str, name: str) -> list[bytes]:
        record = moto_records.capture_queue(account, region, name)
        if record is None:
            self._journaled.pop((account, region, name), None)
            return [moto_records.deleted("queue", [account, region, name])]
        return [record, *self._capture_messages(account, region, name)]

    def _capture_messages(self, account: str, region: str, name: str) -> list[bytes]:
        return moto_records.capture_messages(self._journaled, account, region, name)

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
                moto_records.replay_bucket(header, body)
            elif kind == "object":
                where = (header["id"][0], header["id"][1])
                if where not in backends:
                    backends[where] = moto_records.s3_backend(*where)
                moto_records.replay_object(backends[where], header, body)
                size += len(body)
            elif kind == "queue":
                moto_records.replay_queue(header)
            else:
                moto_records.replay_message(header, body)
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
                    moto_records.note_added(queue, message)
                    state.touch(("message", queue.account_id, queue.region, queue.name))

        Queue.add_message = add_message_hook
        moto_records.TRACKING["on"] = True

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
            queue = kwargs.get(params[0]) if params[0] in kwargs else (args[:1] or [None])[0]
            tracked = queue in state.queues and name in moto_records.TRACKED_REMOVALS
            before = _message_count(backend, queue) if name == "receive_message" else None
            try:
                return method(backend, *args, **kwargs)
            finally:
                if queue in state.queues:
                    where = (backend.account_id, backend.region_name, queue)
                    # A receive that moved or dropped nothing changed no message: no rescan.
                    if not tracked and (before is None or before != _message_count(backend, queue)):
                        moto_records.note_untracked(backend.queues.get(queue))
                    state.touch(("message", *where))
                    if queue_level:
                        state.touch(("queue", *where))

        hook.__wrapped__ = method  # type: ignore[attr-defined]
        return hook


def _message_count(backend: Any, queue: Any) -> int | None:
    found = backend.queues.get(queue) if isinstance(queue, str) else None
    return None if found is None else len(found._messages)  # noqa: SLF001 - moto's own list


def _is_s3_change(name: str) -> bool:
    return any(name == c or (c.endswith("_") and name.startswith(c)) for c in S3_CHANGES)


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
