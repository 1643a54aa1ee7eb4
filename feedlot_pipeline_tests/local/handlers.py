"""Lambda handlers for the bridge tests: they record what they receive, and fail on request."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

CALLS: queue.Queue[dict] = queue.Queue()
_seen: set[str] = set()
_lock = threading.Lock()


def _record(event: dict, context: Any) -> None:
    CALLS.put(
        {
            "event": event,
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }
    )


def reset() -> None:
    while not CALLS.empty():
        CALLS.get_nowait()
    with _lock:
        _seen.clear()


def record(event: dict, context: Any) -> dict:
    _record(event, context)
    return {"ok": True}


def slow(event: dict, context: Any) -> dict:
    time.sleep(1.0)
    _record(event, context)
    return {"ok": True}


def always_fail(event: dict, context: Any) -> dict:
    _record(event, context)
    raise RuntimeError("boom: the warehouse is on fire")


def fail_once(event: dict, context: Any) -> dict:
    _record(event, context)
    message_id = event["Records"][0]["Sns"]["MessageId"]
    with _lock:
        first = message_id not in _seen
        _seen.add(message_id)
    if first:
        raise ConnectionError("transient")
    return {"ok": True}


# A downstream outage: until this monotonic time every invocation fails as if S3 were down.
OUTAGE_UNTIL = 0.0


def during_outage(event: dict, context: Any) -> dict:
    _record(event, context)
    if time.monotonic() < OUTAGE_UNTIL:
        raise ConnectionError("downstream unavailable")
    return {"ok": True}
