"""The partition-loaded notice contract, the CLI registration and a tiny bench-analytics run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from feedlot_pipeline.core.contracts import PartitionLoadedNotice
from feedlot_pipeline.tools.cli import COMMANDS, HELP, main


def notice(**overrides) -> PartitionLoadedNotice:
    values = {
        "fazenda": "fazenda_um",
        "dia": "2024-03-18",
        "rows": 10,
        "lots": 8,
        "rejected": 1,
        "total_kg": 1234.5,
        "correlation_ids": ["trace-1"],
        "outputs": {"describe_consumo": "s3://b/describe/x.csv"},
        "refreshed_at": "2024-03-19T09:00:00Z",
    }
    return PartitionLoadedNotice(**{**values, **overrides})


def test_notice_round_trips_and_states_its_type() -> None:
    text = notice().to_json()
    body = json.loads(text)
    assert (body["type"], body["version"]) == ("partition_loaded", 1)
    assert PartitionLoadedNotice.parse(text) == notice()
    # A consumer ignores fields it does not know yet; a missing count is refused with a reason.
    assert PartitionLoadedNotice.parse(json.dumps({**body, "new_field": 1})) == notice()
    with pytest.raises(ValueError, match="rows: Field required"):
        PartitionLoadedNotice.parse(json.dumps({k: v for k, v in body.items() if k != "rows"}))
    with pytest.raises(ValueError, match="version"):
        PartitionLoadedNotice.parse(json.dumps({**body, "version": 2}))
    with pytest.raises(ValueError):
        notice(rows=-1)


def test_commands_are_registered() -> None:
    for name in ("query", "report", "bench-analytics"):
        assert name in COMMANDS and name in HELP
    result = CliRunner().invoke(main, ["--help"])
    assert "bench-analytics" in result.output and "report" in result.output
    assert CliRunner().invoke(main, ["report", "--help"]).exit_code == 0


def test_bench_analytics_runs_both_paths(pg_server_url: str) -> None:
    result = CliRunner().invoke(
        main,
        [
            "bench-analytics",
            "--records",
            "3000",
            "--days",
            "3",
            "--small-partitions",
            "20",
            "--small-rows",
            "3",
            "--url",
            pg_server_url,
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "(a) analytics" in out and "(b) naive" in out and "(c) small partitions" in out
    assert "rows/s" in out and "peak RSS" in out and "partitions/s" in out
    assert "summary rows (a) 3,000; checks passed: True" in out
    assert "speedup (b)/(a)" in out


def test_provisioning_is_idempotent(analytics_env) -> None:
    from feedlot_pipeline.analytics.provisioning import provision_analytics
    from feedlot_pipeline.core.aws import client

    first = provision_analytics(analytics_env.targets)
    second = provision_analytics(analytics_env.targets)
    assert first == second
    glue = client("glue")
    tables = glue.get_tables(DatabaseName=first.glue_database)["TableList"]
    assert sorted(t["Name"] for t in tables) == ["consumo_diario", "historico_consumo"]
    assert client("sns").get_topic_attributes(TopicArn=first.processed_events_topic_arn)


def test_code_location_loads_as_the_daemon_loads_it(tmp_path) -> None:
    """`dagster-daemon run -m feedlot_pipeline.definitions` (feedlot demo) names no attribute:
    the module must hold exactly one Definitions object, the merged one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import dagster as dg

    import feedlot_pipeline.definitions as module

    found = [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)]
    assert found == ["defs"]
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "feedlot_pipeline.definitions"],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
