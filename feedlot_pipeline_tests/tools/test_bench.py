"""``feedlot bench`` end to end on a tiny input (the real figures come from 1,000,000 records)."""

from __future__ import annotations

from click.testing import CliRunner

from feedlot_pipeline.tools.cli import main


def test_bench_runs_and_reload_inserts_nothing(pg_server_url: str) -> None:
    result = CliRunner().invoke(main, ["bench", "--records", "3000", "--url", pg_server_url])
    assert result.exit_code == 0, result.output
    assert "rows inserted on reload = 0" in result.output
    assert "load / COPY plain" in result.output and "peak RSS" in result.output
    assert "(d) server only, indexed" in result.output
    assert "server only, PK only" in result.output
