"""The whole issue-4 path at once: Dagster → SSM SendCommand → the local agent → the real
``feedlot worker run bulk_import`` → raw zone + warehouse → Pipes back into the run.

The other worker tests prove each half with a stand-in on the far side; this one proves the two
halves agree (command line, Pipes bootstrap, the partitions message) on a real file.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import dagster as dg

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.partitions import split_key
from feedlot_pipeline.tools.synthetic import write_jsonl
from feedlot_pipeline.worker.assets import HISTORICO_CONSUMO, worker_bulk_import
from feedlot_pipeline.worker.jobs import bulk_import_run_config
from feedlot_pipeline.worker.resources import WorkerResource, forwarded_settings
from feedlot_pipeline_tests.helpers import WorkerStack, db_counts

RECORDS = 3_000


def _resource(stack: WorkerStack, settings) -> WorkerResource:  # noqa: ANN001
    return WorkerResource(
        pipes_bucket=settings.processed_bucket,
        tag_key=stack.tag_key,
        tag_value=stack.tag_value,
        timeout_seconds=120,
        poll_seconds=0.5,
        closed_grace_seconds=10,
        # What the instance's shell runs: the package's CLI (`feedlot` on the instance's PATH).
        command=f"{sys.executable} -m feedlot_pipeline.tools.cli",
        output_bucket=settings.processed_bucket,
        # As in production: buckets and the warehouse secret's name travel with the command;
        # the worker reads the URL from Secrets Manager (the agent's own env has none).
        command_env=forwarded_settings(),
    )


def test_real_worker_dispatched_through_ssm_loads_and_reports_every_partition(
    warehouse_url: str, aws, ssm_worker: WorkerStack, tmp_path: Path, monkeypatch
) -> None:
    settings, _ = aws
    secret = client("secretsmanager").create_secret(
        Name=f"feedlot/test/{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"url": warehouse_url})
    )
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", secret["ARN"])
    path = write_jsonl(tmp_path / "history.jsonl", RECORDS, seed=11, bad_fraction=0.02)
    client("s3").upload_file(str(path), settings.landing_bucket, "big/history.jsonl")
    uri = f"s3://{settings.landing_bucket}/big/history.jsonl"

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [worker_bulk_import],
        resources={"worker": _resource(ssm_worker, settings)},
        instance=instance,
        run_config=bulk_import_run_config(uri),
    )
    assert result.success

    (own,) = [
        m
        for m in result.asset_materializations_for_node("worker_bulk_import")
        if m.asset_key == dg.AssetKey("worker_bulk_import")
    ]
    loaded, rejected = own.metadata["loaded"].value, own.metadata["rejected"].value
    assert own.metadata["records"].value == RECORDS == loaded + rejected
    assert 0 < rejected < RECORDS // 10

    # The warehouse holds exactly what the worker reported.
    db = db_counts(warehouse_url)
    assert db["rows"] == loaded and sum(db["rejected_by_code"].values()) == rejected
    assert db["rows_off_partition"] == 0  # each row names the worker object of its partition

    # One historico_consumo materialization per (farm, day) the file touched, counts adding up.
    records = instance.fetch_materializations(HISTORICO_CONSUMO, limit=1000).records
    partitions = {r.partition_key: r.asset_materialization.metadata for r in records}
    days = {split_key(key) for key in partitions}
    assert {farm for farm, _ in days} >= {"fazenda_um", "fazenda_dois"}
    assert sum(m["loaded"].value for m in partitions.values()) == loaded

    # The worker's own log lines reached the run.
    logs = "\n".join(r.user_message for r in instance.all_logs(result.run_id))
    assert uri in logs

    # Dispatched again (a new run): nothing is written twice.
    again = dg.materialize(
        [worker_bulk_import],
        resources={"worker": _resource(ssm_worker, settings)},
        instance=instance,
        run_config=bulk_import_run_config(uri),
    )
    assert again.success
    (second,) = [
        m
        for m in again.asset_materializations_for_node("worker_bulk_import")
        if m.asset_key == dg.AssetKey("worker_bulk_import")
    ]
    assert second.metadata["inserted"].value == 0 and second.metadata["updated"].value == 0
    assert db_counts(warehouse_url) == db
