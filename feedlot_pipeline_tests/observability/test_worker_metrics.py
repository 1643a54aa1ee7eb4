"""The EC2 worker's bulk import emits its duration, records and records/s once per job: the real
``feedlot worker run`` process against moto and PostgreSQL, read back from CloudWatch."""

from __future__ import annotations

from pathlib import Path

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.tools.synthetic import write_jsonl
from feedlot_pipeline_tests.helpers import metric_names, metric_stats, run_worker


def test_bulk_import_emits_job_metrics(aws, warehouse_url: str, metrics_ns: str, tmp_path: Path):
    settings, _ = aws
    path = write_jsonl(tmp_path / "hist.jsonl", 3000, seed=5, bad_fraction=0.01)
    client("s3").upload_file(str(path), settings.landing_bucket, "incoming/big/hist.jsonl")
    done = run_worker(
        f"s3://{settings.landing_bucket}/incoming/big/hist.jsonl",
        f"s3://{settings.processed_bucket}/out/1",
        tmp_path / "ebs",
        "job-metrics-1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert metric_stats(metrics_ns, "WorkerRecords", Job="bulk_import")["Sum"] == 3000
    seconds = metric_stats(metrics_ns, "WorkerJobDuration", Job="bulk_import")["Maximum"]
    rate = metric_stats(metrics_ns, "WorkerRecordsPerSecond", Job="bulk_import")["Maximum"]
    assert 0 < seconds < 300 and abs(rate * seconds - 3000) < 30
    assert {n for n, _ in metric_names(metrics_ns)} == {
        "WorkerJobDuration",
        "WorkerRecords",
        "WorkerRecordsPerSecond",
    }
