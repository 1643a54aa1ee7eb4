"""The worker under Dagster Pipes: a Dagster asset opens a Pipes session over S3 (dagster_aws'
PipesS3ContextInjector / PipesS3MessageReader, what the SSM Pipes client uses) and runs the real
``feedlot worker run bulk_import`` process with the bootstrap variables, as SSM would.

Dagster inspects the context annotation: no postponed annotations in this module.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.tools.synthetic import write_jsonl
from feedlot_pipeline_tests.helpers import run_worker


def pipes_asset(settings: Any, input_uri: str, output_uri: str, workdir: Path, seen: dict):
    """An asset named like the real one that runs the worker in a Pipes session."""

    @dg.asset(name="worker_bulk_import")
    def worker_bulk_import(context: dg.AssetExecutionContext):
        s3 = client("s3")
        with dg.open_pipes_session(
            context=context,
            context_injector=PipesS3ContextInjector(bucket=settings.processed_bucket, client=s3),
            message_reader=PipesS3MessageReader(
                bucket=settings.processed_bucket, client=s3, interval=0.2
            ),
        ) as session:
            seen["env"] = session.get_bootstrap_env_vars()
            seen["proc"] = run_worker(input_uri, output_uri, workdir, context.run_id, seen["env"])
        seen["custom"] = session.get_custom_messages()
        if seen["proc"].returncode != 0:
            raise dg.Failure(f"worker exited {seen['proc'].returncode}")
        yield from session.get_results()

    return worker_bulk_import


def run_logs(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    return list(instance.all_logs(run_id))


def test_logs_progress_partitions_and_materialization_reach_dagster(
    aws, warehouse_url: str, tmp_path: Path
) -> None:
    settings, _ = aws
    n = 3_000
    path = write_jsonl(tmp_path / "f.jsonl", n, seed=5, bad_fraction=0.05)
    client("s3").upload_file(str(path), settings.landing_bucket, "incoming/f.jsonl")
    seen: dict = {}
    asset = pipes_asset(
        settings,
        f"s3://{settings.landing_bucket}/incoming/f.jsonl",
        f"s3://{settings.processed_bucket}/out/",
        tmp_path / "ebs",
        seen,
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], instance=instance, raise_on_error=False)
    assert result.success, seen.get("proc") and seen["proc"].stderr[-3000:]
    assert set(seen["env"]) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}

    # The worker's materialization, with its counts.
    (mat,) = result.asset_materializations_for_node("worker_bulk_import")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["records"] == n == meta["loaded"] + meta["rejected"]
    assert meta["inserted"] == meta["loaded"] > 0
    assert sum(meta["rejected_by_code"].values()) == meta["rejected"] > 0
    assert meta["report"].endswith("/out/report.json")

    # The partitions touched, in the documented custom message, with per-partition counts.
    (partitions_msg,) = [
        m for m in seen["custom"] if m.get("type") == "historico_consumo_partitions"
    ]
    assert partitions_msg["asset_key"] == "historico_consumo"
    entries = partitions_msg["partitions"]
    assert sum(p["records"] for p in entries) == n
    assert sum(p["loaded"] for p in entries) == meta["loaded"]
    assert {p["fazenda"] for p in entries} >= {"fazenda_um", "fazenda_dois"}
    assert all(p["records"] == p["loaded"] + p["rejected"] for p in entries)
    assert partitions_msg["totals"]["rejected_by_code"] == meta["rejected_by_code"]
    progress = [m for m in seen["custom"] if m.get("type") == "bulk_import.progress"]
    assert progress and progress[-1]["records"] == n

    # The Dagster-side helper turns the message into one entry per (fazenda, dia).
    from feedlot_pipeline.worker.assets import touched_partitions

    merged = touched_partitions(seen["custom"])
    assert len(merged) == len(entries)

    # Log lines arrive in the run's event log.
    messages = [e.user_message for e in run_logs(instance, result.run_id)]
    assert any("chunk 1:" in m for m in messages)
    assert any(m.startswith("done:") or "done: 3,000 records" in m for m in messages)


def test_worker_failure_reaches_dagster_and_exits_non_zero(
    aws, warehouse_url: str, tmp_path: Path
) -> None:
    settings, _ = aws
    seen: dict = {}
    missing = f"s3://{settings.landing_bucket}/incoming/gone.jsonl"
    asset = pipes_asset(
        settings, missing, f"s3://{settings.processed_bucket}/fail/", tmp_path / "ebs", seen
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], instance=instance, raise_on_error=False)
    assert not result.success
    proc = seen["proc"]
    assert proc.returncode == 1
    assert f"input object {missing} does not exist" in proc.stderr

    # dagster_pipes sent the exception in its closed message; Dagster recorded it.
    errors = [
        e.dagster_event.engine_event_data.error
        for e in run_logs(instance, result.run_id)
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and "closed with exception" in (e.user_message or e.dagster_event.message or "")
    ]
    assert errors and errors[0].cls_name == "WorkerError"
    assert "does not exist" in errors[0].message
    # ... and its log line too.
    messages = [e.user_message for e in run_logs(instance, result.run_id)]
    assert any("failed: WorkerError" in m for m in messages)


def test_warehouse_down_fails_clearly(aws, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A worker whose warehouse is unreachable exits 1 naming it, through Pipes too."""
    settings, _ = aws
    client("s3").put_object(
        Bucket=settings.landing_bucket, Key="incoming/x.jsonl", Body=b'{"a": 1}\n'
    )
    from feedlot_pipeline.local.services import free_port

    monkeypatch.setenv(
        "FEEDLOT_WAREHOUSE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    )
    seen: dict = {}
    asset = pipes_asset(
        settings,
        f"s3://{settings.landing_bucket}/incoming/x.jsonl",
        f"s3://{settings.processed_bucket}/down/",
        tmp_path / "ebs",
        seen,
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([asset], instance=instance, raise_on_error=False)
    assert not result.success
    assert seen["proc"].returncode == 1
    assert "is unreachable" in seen["proc"].stderr
    errors = [
        e.dagster_event.engine_event_data.error
        for e in run_logs(instance, result.run_id)
        if e.dagster_event is not None
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and e.dagster_event.engine_event_data.error is not None
    ]
    assert any("is unreachable" in err.message for err in errors)
