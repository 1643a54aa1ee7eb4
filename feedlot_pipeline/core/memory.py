"""Peak memory of this process, as the benchmarks and the worker report it."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """This process's own peak resident set size, in MiB.

    On Linux it reads ``VmHWM``: ``ru_maxrss`` survives fork and exec, so a freshly spawned
    worker would report its parent's peak as its own. Elsewhere ``ru_maxrss`` (KiB on Linux,
    bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)
