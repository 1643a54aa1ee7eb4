"""Three hot spots of moto's server, measured under the streaming soak, made cheap.

Profiled with py-spy at 20 records/s (moto at 95 % of a core, ~125 requests/s):

- 33 % of moto's time: routing every request calls ``backends.list_of_moto_modules()``, which
  lists moto's package directory and stats ~150 folders, inside a global lock. The list never
  changes while the server runs: computed once.
- 28 %: every ``SendMessage`` reads the queue's attributes for one flag, and building them counts
  the queue's messages three times over, asking the clock for every message
  (``Message.visible``/``delayed``), so a send costs O(backlog); every ``ReceiveMessage`` lists
  the visible messages the same way. The counts and the list take one clock reading per pass.

Behaviour is unchanged (same counts, same routing); only the cost. Applied by the local stack's
moto (``python -m feedlot_pipeline.local.moto_server``, which also journals the lake) and by the
tests' and benchmarks' moto (``python -m feedlot_pipeline.local.moto_speedups``).
"""

from __future__ import annotations

import sys
from typing import Any


def apply() -> None:
    from moto import backends
    from moto.core.utils import unix_time_millis
    from moto.sqs import models as sqs

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

    sqs.Queue.messages = property(visible_messages)
    sqs.Queue.approximate_number_of_messages = property(lambda q: counts(q)[0])
    sqs.Queue.approximate_number_of_messages_not_visible = property(lambda q: counts(q)[1])
    sqs.Queue.approximate_number_of_messages_delayed = property(lambda q: counts(q)[2])


def main() -> None:
    """``python -m moto.server`` with the speed-ups applied first (same arguments)."""
    apply()
    from moto.server import main as moto_main

    sys.argv[0] = "moto_server"
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
