"""The hot spots of moto's server, measured under the streaming soak, made cheap.

Profiled with py-spy at 20 records/s (moto at 95 % of a core, ~125 requests/s):

- 33 % of moto's time: routing every request calls ``backends.list_of_moto_modules()``, which
  lists moto's package directory and stats ~150 folders, inside a global lock. The list never
  changes while the server runs: computed once.
- 28 %: every ``SendMessage`` reads the queue's attributes for one flag, and building them counts
  the queue's messages three times over, asking the clock for every message
  (``Message.visible``/``delayed``), so a send costs O(backlog); every ``ReceiveMessage`` lists
  the visible messages the same way. The counts and the list take one clock reading per pass.

At 100 records/s with a backlog of 12,000 notices (py-spy, moto pegged, a receive of 10
messages taking ~1 s):

- 84 %: every message a ``ReceiveMessage`` returns checks its retention period through
  ``get_queue_attributes([...])``, which builds the queue's whole attribute dict three times
  per asked name, each counting the backlog three times: 9 passes over the queue per message
  returned. The check now reads the queue's retention period; ``get_queue_attributes`` builds the
  dict once, and the dict counts the backlog once.
- ``SendMessage`` (SNS fan-out to a queue included) built the attribute dict, counting the
  backlog, for one flag; it no longer counts (16 % of moto at 100 records/s into a 27k inbox).
- ``DeleteMessage`` scanned the queue twice per receipt, building a list of receipt handles for
  every message; it now finds the message through a receipt index (rebuilt on a miss) and
  drops it in one pass.

Behaviour is unchanged (same counts, same routing); only the cost. Applied by the local stack's
moto (``python -m feedlot_pipeline.local.moto_server``, which also journals the lake) and by the
tests' and benchmarks' moto (``python -m feedlot_pipeline.local.moto_speedups``).
"""

from __future__ import annotations

import sys
import threading
from typing import Any


def apply() -> None:
    from moto import backends
    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs import models as sqs
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

    def counts(queue: Any) -> tuple[int, int, int]:
        now = unix_time_millis()
        visible = not_visible = delayed = 0
        for m in queue._messages:  # noqa: SLF001 - moto's own list
            is_delayed = now < m.delayed_until
            if now > m.visible_at:
                if not is_delayed:
                    visible += 1
            else:
                not_visible += 1
            if is_delayed:
                delayed += 1
        return visible, not_visible, delayed

    def visible_messages(queue: Any) -> list[Any]:
        now = unix_time_millis()
        return [
            m
            for m in queue._messages  # noqa: SLF001
            if now > m.visible_at and not now < m.delayed_until
        ]

    sending = threading.local()  # SendMessage reads one flag of the attribute dict: no counts

    def counted(queue: Any) -> tuple[int, int, int]:
        if getattr(sending, "on", False):
            return (0, 0, 0)
        return queue.__dict__.get("_feedlot_counts") or counts(queue)

    sqs.Queue.messages = property(visible_messages)
    sqs.Queue.approximate_number_of_messages = property(lambda q: counted(q)[0])
    sqs.Queue.approximate_number_of_messages_not_visible = property(lambda q: counted(q)[1])
    sqs.Queue.approximate_number_of_messages_delayed = property(lambda q: counted(q)[2])

    build_attributes = sqs.Queue.attributes.fget

    def attributes(queue: Any) -> dict[str, Any]:
        """moto's attribute dict, with the backlog counted once instead of three times."""
        queue._feedlot_counts = (0, 0, 0) if getattr(sending, "on", False) else counts(queue)
        try:
            return build_attributes(queue)
        finally:
            queue._feedlot_counts = None

    sqs.Queue.attributes = property(attributes)

    original_send = sqs.SQSBackend.send_message

    def send_message(backend: Any, *args: Any, **kwargs: Any) -> Any:
        """moto's; the attribute dict it builds for ContentBasedDeduplication skips the counts
        (they cost a pass over the backlog per message sent, SNS fan-out included)."""
        sending.on = True
        try:
            return original_send(backend, *args, **kwargs)
        finally:
            sending.on = False

    sqs.SQSBackend.send_message = send_message

    def get_queue_attributes(
        backend: Any, queue_name: str, attribute_names: list[str]
    ) -> dict[str, Any]:
        """As moto's (same validation first), building the attribute dict once."""
        queue = backend.get_queue(queue_name)
        if not attribute_names or "All" in attribute_names:
            return original_get_attributes(backend, queue_name, attribute_names)
        current = queue.attributes
        known = set(sqs.Queue.BASE_ATTRIBUTES) | set(sqs.Queue.FIFO_ATTRIBUTES)
        known |= set(sqs.Queue.KMS_ATTRIBUTES)
        if any(name not in known for name in attribute_names):
            return original_get_attributes(backend, queue_name, attribute_names)  # its errors
        return {
            name: current[name]
            for name in attribute_names
            if name in current and current[name] is not None
        }

    original_get_attributes = sqs.SQSBackend.get_queue_attributes
    sqs.SQSBackend.get_queue_attributes = get_queue_attributes

    def retained(backend: Any, queue_name: str, message: Any) -> bool:
        queue = backend.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > unix_time()

    sqs.SQSBackend.is_message_valid_based_on_retention_period = retained

    def removed(queue: Any, message_id: str) -> None:
        """Tell the lake journal (when it runs here) which message went."""
        from feedlot_pipeline.local import moto_records

        moto_records.note_removed(queue, message_id)

    def delete_message(queue: Any, receipt_handle: str) -> None:
        """moto's, with the message found through a receipt index instead of two scans."""
        if receipt_handle in queue.deleted_messages:
            return  # deleted already: AWS answers success
        index: dict[str, Any] = queue.__dict__.setdefault("_feedlot_receipts", {})
        for attempt in (0, 1):
            message = index.get(receipt_handle)
            if message is not None:
                kept = [m for m in queue._messages if m is not message]  # noqa: SLF001
                if len(kept) < len(queue._messages):  # noqa: SLF001
                    queue.pending_messages.discard(message)
                    handles = message.all_receipt_handles
                    queue.deleted_messages.update(handles)
                    queue._messages = kept  # noqa: SLF001
                    for handle in handles:
                        index.pop(handle, None)
                    removed(queue, message.id)
                    return
            if attempt == 0:  # a new receipt, or a message gone another way: re-index
                index.clear()
                for m in queue._messages:  # noqa: SLF001
                    for handle in m.all_receipt_handles:
                        index[handle] = m
        raise ReceiptHandleIsInvalid()

    sqs.Queue.delete_message = delete_message


def main() -> None:
    """``python -m moto.server`` with the speed-ups applied first (same arguments)."""
    apply()
    from moto.server import main as moto_main

    sys.argv[0] = "moto_server"
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
