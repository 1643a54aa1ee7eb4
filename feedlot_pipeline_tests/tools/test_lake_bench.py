"""``feedlot lake-bench`` runs end to end (tiny numbers: a smoke test, not a measurement)."""

from __future__ import annotations

import re

from click.testing import CliRunner

from feedlot_pipeline.tools.bench.lake import lake_bench


def test_lake_bench_reports_each_mode_and_the_replay() -> None:
    out = CliRunner().invoke(
        lake_bench, ["--objects", "20", "--clients", "2", "--size", "200", "--replay", "300"]
    )
    assert out.exit_code == 0, out.output
    for mode in ("moto (nothing kept)", "journal (default)", "journal + fsync"):
        assert re.search(rf"{re.escape(mode)}\s+2(\s+\d+){{4}}", out.output), out.output
    assert "restart with 300 objects" in out.output
