"""Dispatch to the EC2 worker through SSM with Dagster Pipes, end to end on the local stand-ins.

Real parts: the session moto server, the local SSM agent process executing the command, a Pipes
worker script speaking dagster_pipes over S3 buckets, and Dagster materializing the real asset.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import dagster as dg
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import PartitionsMessage
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.worker.assets import HISTORICO_CONSUMO, touched_partitions, worker_bulk_import
from feedlot_pipeline.worker.jobs import bulk_import_run_config
from feedlot_pipeline.worker.pipes_ssm import PipesSSMError, shell_command
from feedlot_pipeline.worker.resources import WorkerResource
from feedlot_pipeline_tests.helpers import WorkerStack, alive, put_spec, wait_for

PARTITIONS = [
    {"fazenda": "fazenda_um", "dia": "2024-03-18", "records": 10, "loaded": 9, "rejected": 1},
    {"fazenda": f"fazenda_nova_{uuid.uuid4().hex[:6]}", "dia": "2024-03-19", "records": 5},
]


def _resource(stack: WorkerStack, settings, timeout: float = 60) -> WorkerResource:  # noqa: ANN001
    return WorkerResource(
        pipes_bucket=settings.processed_bucket,
        tag_key=stack.tag_key,
        tag_value=stack.tag_value,
        timeout_seconds=timeout,
        poll_seconds=0.5,
        closed_grace_seconds=5,
        command=stack.worker_command(),
        output_bucket=settings.processed_bucket,
    )


def _materialize(stack: WorkerStack, settings, uri: str, timeout: float = 60, **kw):  # noqa: ANN001, ANN003
    return dg.materialize(
        [worker_bulk_import],
        resources={"worker": _resource(stack, settings, timeout)},
        instance=kw.pop("instance", None) or dg.DagsterInstance.ephemeral(),
        run_config=bulk_import_run_config(uri),
        **kw,
    )


def _logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Every message in the run's event log (the worker's log lines arrive as Dagster logs)."""
    return "\n".join(r.user_message for r in instance.all_logs(result.run_id))


def _own(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    mats = result.asset_materializations_for_node("worker_bulk_import")
    return [m for m in mats if m.asset_key == dg.AssetKey("worker_bulk_import")]


def test_dispatch_succeeds_with_logs_and_materializations(aws, ssm_worker: WorkerStack) -> None:
    settings, _ = aws
    uri = put_spec(
        settings.landing_bucket, "big/file-ok.jsonl", {"mode": "ok", "partitions": PARTITIONS}
    )
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(ssm_worker, settings, uri, instance=instance)
    assert result.success
    logs = _logs(instance, result)
    # The worker's own log lines, streamed into the run.
    assert "bulk_import: reading " + uri in logs
    assert f"bulk_import: loaded {PARTITIONS[1]['fazenda']} 2024-03-19" in logs
    (mat,) = _own(result)
    assert mat.metadata["records"].value == 15  # reported by the worker through Pipes
    assert mat.metadata["partitions_touched"].value == 2
    assert mat.metadata["ssm_status"].value == "Success"
    output = mat.metadata["output_uri"].value
    assert output == f"s3://{settings.processed_bucket}/worker-output/{result.run_id}/"
    summary = client("s3").get_object(
        Bucket=settings.processed_bucket, Key=f"worker-output/{result.run_id}/summary.json"
    )
    assert summary["ContentLength"] > 0
    # Every partition the worker touched shows as a historico_consumo materialization.
    records = instance.fetch_materializations(HISTORICO_CONSUMO, limit=10).records
    by_partition = {r.partition_key: r.asset_materialization for r in records}
    expected = {str(farm_day_key(p["fazenda"], p["dia"])) for p in PARTITIONS}
    assert set(by_partition) == expected
    first = by_partition[str(farm_day_key("fazenda_um", "2024-03-18"))]
    assert first.metadata["loaded"].value == 9 and first.metadata["rejected"].value == 1
    assert PARTITIONS[1]["fazenda"] in instance.get_dynamic_partitions(farms_partitions.name)
    # Pipes objects stay under the configured prefix; the context object is cleaned up.
    keys = [
        o["Key"]
        for o in client("s3").list_objects_v2(Bucket=settings.processed_bucket, Prefix="pipes/")[
            "Contents"
        ]
    ]
    assert keys and all(k.startswith(f"pipes/{result.run_id}/") for k in keys)
    assert not any(k.endswith("context.json") for k in keys)


def test_worker_failure_surfaces_the_workers_error(aws, ssm_worker: WorkerStack) -> None:
    settings, _ = aws
    uri = put_spec(settings.landing_bucket, "big/file-bad.jsonl", {"mode": "fail"})
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(ssm_worker, settings, uri, instance=instance, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert f"worker failed: ValueError: bad input file {uri}: line 3 is not JSON" in message
    assert "Failed, exit code 1" in message
    assert "about to fail" in _logs(instance, result)  # the command's stderr tail, forwarded
    assert not _own(result)


def test_timeout_cancels_the_command_and_raises(aws, ssm_worker: WorkerStack) -> None:
    settings, _ = aws
    pidfile = f"timeout-{uuid.uuid4().hex[:8]}.pid"
    uri = put_spec(
        settings.landing_bucket,
        "big/slow.jsonl",
        {"mode": "sleep", "seconds": 60, "pidfile": pidfile},
    )
    started = time.monotonic()
    with pytest.raises(PipesSSMError, match="did not finish within 4 s"):
        _materialize(ssm_worker, settings, uri, timeout=4)
    assert time.monotonic() - started < 30
    pid = int((ssm_worker.workdir / pidfile).read_text())
    wait_for(lambda: not alive(pid), timeout=10, what="the worker to be killed")
    (latest, *_) = client("ssm").list_command_invocations(InstanceId=ssm_worker.instance_id)[
        "CommandInvocations"
    ]
    assert latest["Status"] == "Cancelled"


TERMINATED_RUN = """
import sys
import dagster as dg
from feedlot_pipeline.worker.assets import worker_bulk_import
from feedlot_pipeline.worker.jobs import bulk_import_run_config
from feedlot_pipeline.worker.resources import WorkerResource

resource = WorkerResource(
    pipes_bucket=sys.argv[2], tag_key="Role", tag_value=sys.argv[3], poll_seconds=0.5,
    command=sys.argv[4], output_bucket=sys.argv[2], timeout_seconds=120,
)
dg.materialize(
    [worker_bulk_import],
    resources={"worker": resource},
    instance=dg.DagsterInstance.ephemeral(),
    run_config=bulk_import_run_config(sys.argv[1]),
)
"""


def test_terminated_run_stops_the_worker(aws, ssm_worker: WorkerStack) -> None:
    settings, _ = aws
    pidfile = f"terminated-{uuid.uuid4().hex[:8]}.pid"
    uri = put_spec(
        settings.landing_bucket,
        "big/long.jsonl",
        {"mode": "sleep", "seconds": 120, "pidfile": pidfile},
    )
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            TERMINATED_RUN,
            uri,
            settings.processed_bucket,
            ssm_worker.tag_value,
            ssm_worker.worker_command(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pid_path = ssm_worker.workdir / pidfile
        wait_for(pid_path.exists, timeout=60, what="the worker to start")
        pid = int(pid_path.read_text())
        assert alive(pid)
        run.send_signal(signal.SIGINT)  # what terminating a Dagster run delivers to its step
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert "cancelling SSM" in output
    wait_for(lambda: not alive(pid), timeout=10, what="the worker to be killed")
    (latest, *_) = client("ssm").list_command_invocations(InstanceId=ssm_worker.instance_id)[
        "CommandInvocations"
    ]
    assert latest["Status"] == "Cancelled"


def _partitions_message(*entries: dict) -> dict:
    return PartitionsMessage(
        job="bulk_import",
        job_id="j",
        input="s3://b/k",
        import_id="bulk-1",
        partitions=list(entries),
        totals={},
    ).to_dict()


def test_touched_partitions_merges_chunks() -> None:
    messages = [
        _partitions_message({"fazenda": "a", "dia": "2024-01-01", "records": 2, "loaded": 2}),
        "not a message",
        {"type": "bulk_import.progress", "chunks": 3, "partitions": 12},
        _partitions_message(
            {"fazenda": "a", "dia": "2024-01-01T00:00:00", "records": 3, "loaded": 1}
        ),
        _partitions_message({"fazenda": "b", "dia": "2024-01-02", "records": 1}),
    ]
    merged = touched_partitions(messages)
    assert [(m["fazenda"], m["dia"], m["records"], m["loaded"]) for m in merged] == [
        ("a", "2024-01-01", 5, 3),
        ("b", "2024-01-02", 1, 0),
    ]


def test_a_partitions_message_off_contract_fails_loudly() -> None:
    bad = {"type": "historico_consumo_partitions", "version": 1, "partitions": [{"dia": "x"}]}
    with pytest.raises(ValueError, match="fazenda"):
        touched_partitions([bad])


def test_shell_command_quotes_everything() -> None:
    line = shell_command(["feedlot", "worker", "run", "x", "--input", "s3://b/a b"], {"V": "x'y"})
    assert line == "V='x'\"'\"'y' feedlot worker run x --input 's3://b/a b'"


def test_run_config_path_matches_the_job() -> None:
    from feedlot_pipeline.worker.jobs import worker_bulk_import_job

    defs = dg.Definitions(
        assets=[worker_bulk_import],
        jobs=[worker_bulk_import_job],
        resources={"worker": WorkerResource(pipes_bucket="b")},
    )
    job = defs.resolve_job_def("worker_bulk_import_job")
    config = {"ops": {"worker_bulk_import": {"config": {"input_uri": "s3://b/k"}}}}
    assert job.run_config_schema.config_type is not None
    from dagster._config import process_config

    assert process_config(job.run_config_schema.config_type, config).success


def test_configuration_rides_on_the_command_but_never_a_url(monkeypatch) -> None:
    from feedlot_pipeline.worker.resources import forwarded_settings

    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "lake-x")
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", "feedlot/prod/warehouse")
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", "postgresql+psycopg://u:secret@db/feedlot")
    forwarded = forwarded_settings()
    assert forwarded["FEEDLOT_LAKE_BUCKET"] == "lake-x"
    assert forwarded["FEEDLOT_WAREHOUSE_SECRET"] == "feedlot/prod/warehouse"
    assert "FEEDLOT_WAREHOUSE_URL" not in forwarded
    line = shell_command(["feedlot", "worker", "run"], forwarded)
    assert "FEEDLOT_LAKE_BUCKET=lake-x" in line and "secret@" not in line
