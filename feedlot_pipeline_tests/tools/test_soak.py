"""The soak's CPU meter: it counts the platform's processes by part, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from feedlot_pipeline.tools.soak import CpuMeter, part_of

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"


def test_parts_are_told_apart_by_command_line() -> None:
    assert part_of("python -m feedlot_pipeline.local.moto_server -p 1") == "moto"
    assert part_of("python -m dagster api execute_run {...}") == "runs"
    assert part_of("python -c from multiprocessing.spawn import spawn_main; …") == "runs"
    assert part_of("python -m dagster api grpc --lazy-load-user-code") == "sensors (code server)"
    assert part_of("python -m dagster._daemon run") == "daemon"
    assert part_of("python something_else.py") == "other"


def test_meter_counts_a_finished_process_of_the_stack_but_not_others(tmp_path) -> None:
    state = str(tmp_path / f"state-{uuid.uuid4().hex[:6]}")
    meter = CpuMeter(state)
    ours = subprocess.Popen(
        [sys.executable, "-c", BURN + "time.sleep(30)", state], stdin=subprocess.DEVNULL
    )
    stranger = subprocess.Popen([sys.executable, "-c", BURN + "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            meter.sample()
            if meter.total() >= 0.35:
                break
            time.sleep(0.1)
    finally:
        ours.kill()
        stranger.kill()
        ours.wait()
        stranger.wait()
    meter.sample()  # the process is gone: its last sample still counts
    assert 0.35 <= meter.by_part()["other"] < 0.7  # one burner's CPU, not two
    assert ours.pid in {pid for pid, _ in meter.seen}
    assert stranger.pid not in {pid for pid, _ in meter.seen}
