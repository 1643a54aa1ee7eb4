"""The local stack's moto server, with a lake that survives restarts and crashes.

``python -m feedlot_pipeline.local.moto_server --host H --port P --journal DIR [--durable-queue
NAME]... [--fsync]`` serves moto's own WSGI application (what ``python -m moto.server``
runs, same API on the same port, with ``moto_speedups`` applied) wrapped so that every change
to S3 and to the durable queues is written to the journal in ``DIR`` before the request is
answered (``moto_journal.py``).

On start, before it listens, it reads the journal (cutting off a record a kill left half
written), compacts it when dead records outweigh live ones, and puts the live state back into
the fresh moto: buckets with their configuration and objects, then the durable queues with their
messages. The port opens only when that is done, so the supervisor's "listening" means "restored".
A JSON line in the log reports what was restored and how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from feedlot_pipeline.local.journal import Journal, JournalError
from feedlot_pipeline.local.moto_journal import DurableState, JournaledApp
from feedlot_pipeline.local.state import private_dir


def _log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": time.time(), "logger": "feedlot.moto", "event": event, **fields}))


def open_state(folder: Path, durable_queues: list[str], fsync: bool = False) -> DurableState:
    """Read, repair, compact and replay the journal into this process's moto; hook moto."""
    import moto

    started = time.monotonic()
    journal = Journal(private_dir(folder), fsync=fsync)
    journal.lock()
    index = journal.scan()
    read = {
        "records": len(index.live),
        "journal_bytes": index.total_bytes,
        "live_bytes": index.live_bytes,
        "repaired_bytes": index.repaired_bytes,
    }
    if journal.should_compact(index):
        index = journal.compact(index)
        read["compacted_to_bytes"] = index.total_bytes
    state = DurableState(journal, durable_queues)
    restored = state.replay(index)
    journal.open_segment(index, {"moto": moto.__version__, "pid": os.getpid()})
    state.install()
    _log(
        "restored",
        journal=str(folder),
        **restored,
        **read,
        total_seconds=round(time.monotonic() - started, 3),
    )
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True, help="the journal's folder")
    parser.add_argument(
        "--durable-queue", action="append", default=[], help="a queue whose messages are kept"
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="fsync before answering each change (survives a power cut); without it a change "
        "is written before the answer (survives a kill of this process) and fsynced within 1 s",
    )
    args = parser.parse_args(argv)
    os.environ["MOTO_PORT"] = str(args.port)  # moto builds some URLs from it

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    from feedlot_pipeline.local import moto_speedups

    moto_speedups.apply()
    moto_speedups.quiet_request_log(MotoRequestHandler)

    try:
        state = open_state(args.journal, args.durable_queue, fsync=args.fsync)
    except JournalError as err:
        _log("refused", error=str(err))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server: errors answer with moto's message
    try:
        run_simple(
            args.host,
            args.port,
            JournaledApp(app, state),
            threaded=True,
            request_handler=moto_speedups.keep_alive(MotoRequestHandler),
        )
    finally:
        state.close()
        _log("stopped", journal=str(args.journal))


if __name__ == "__main__":
    main()
