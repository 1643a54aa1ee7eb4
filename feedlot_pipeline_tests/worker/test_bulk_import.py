"""The worker's bulk import, run as the real ``feedlot worker run`` process (moto, PostgreSQL).

Without Pipes variables (a run by hand) here; ``test_worker_pipes.py`` runs it under Dagster Pipes.
"""

from __future__ import annotations

import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.lake import RAW_PREFIX, parse_raw_key
from feedlot_pipeline.tools.synthetic import write_jsonl
from feedlot_pipeline_tests.helpers import db_counts, run_worker


def read_json(uri: str) -> Any:
    bucket, key = uri[5:].split("/", 1)
    return json.loads(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def raw_keys(bucket: str) -> list[str]:
    s3 = client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=RAW_PREFIX)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def raw_objects(bucket: str) -> dict[str, bytes]:
    s3 = client("s3")
    keys = raw_keys(bucket)
    with ThreadPoolExecutor(8) as pool:
        bodies = pool.map(lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(), keys)
        return dict(zip(keys, bodies, strict=True))


def sensor_queue_depth(queue: str) -> int:
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(queue), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_bulk_import_200k_reconciles_and_reimport_writes_nothing(
    aws, warehouse_url: str, tmp_path: Path
) -> None:
    settings, _ = aws
    n = 200_000
    path = write_jsonl(tmp_path / "hist.jsonl", n, seed=11, bad_fraction=0.01)
    client("s3").upload_file(str(path), settings.landing_bucket, "incoming/big/hist.jsonl")
    input_uri = f"s3://{settings.landing_bucket}/incoming/big/hist.jsonl"
    workdir = tmp_path / "ebs"

    started = time.monotonic()
    first = run_worker(input_uri, f"s3://{settings.processed_bucket}/out/1", workdir, "run-1")
    first_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-3000:]
    report = read_json(f"s3://{settings.processed_bucket}/out/1/report.json")

    # The counts reconcile, with the database and with the raw zone.
    assert report["status"] == "succeeded"
    assert report["records"] == n
    assert report["records"] == report["loaded"] + report["rejected"]
    assert report["inserted"] == report["loaded"] > 0.98 * n
    assert report["updated"] == 0
    assert 0 < report["rejected"] < 0.02 * n
    assert sum(report["rejected_by_code"].values()) == report["rejected"]
    db = db_counts(warehouse_url)
    assert db["rows"] == report["loaded"]
    assert db["rejected_by_code"] == report["rejected_by_code"]
    assert db["rows_off_partition"] == 0  # every row names the raw object of its own partition
    assert set(report["rejected_by_code"]) <= {
        "missing_field",
        "non_positive",
        "unknown_client",
        "invalid_data",
        "invalid_number",
    }

    objects = raw_objects(settings.lake_bucket)
    assert len(objects) == report["raw_objects"] == report["raw_objects_written"]
    lines = sum(body.count(b"\n") for body in objects.values())
    assert lines == n
    per_partition: dict[tuple[str, str], int] = {}
    for key, body in objects.items():
        fazenda, dia = parse_raw_key(key)
        assert "/worker-bulk-" in key
        per_partition[(fazenda, dia.isoformat())] = per_partition.get(
            (fazenda, dia.isoformat()), 0
        ) + body.count(b"\n")
    reported = {(p["fazenda"], p["dia"]): p for p in report["partitions"]}
    assert {k: p["records"] for k, p in reported.items()} == per_partition
    assert all(p["records"] == p["loaded"] + p["rejected"] for p in reported.values())
    assert report["partitions_touched"] == len(reported)
    assert "_unrouted" in {f for f, _ in reported}  # unknown clients and bad dates
    assert all(p["loaded"] == 0 for (f, _), p in reported.items() if f == "_unrouted")
    assert sensor_queue_depth(settings.sensor_queue) == 0  # the worker loads; no notices

    # Its own log in the work dir and in the output; temp files gone.
    log = (workdir / "logs" / "run-1.log").read_text()
    assert "chunk 1:" in log and "done:" in log
    out_log = (
        client("s3")
        .get_object(Bucket=settings.processed_bucket, Key="out/1/run-1.log")["Body"]
        .read()
    )
    assert b"done:" in out_log
    assert not any((workdir / "tmp").iterdir())

    # A re-import (another job id) writes nothing twice.
    second = run_worker(input_uri, f"s3://{settings.processed_bucket}/out/2", workdir, "run-2")
    assert second.returncode == 0, second.stderr[-3000:]
    again = read_json(f"s3://{settings.processed_bucket}/out/2/report.json")
    assert again["inserted"] == 0 and again["updated"] == 0
    assert again["unchanged"] == report["loaded"]
    assert again["rejected_by_code"] == report["rejected_by_code"]
    assert again["raw_objects_written"] == 0
    assert again["raw_objects_existing"] == report["raw_objects"]
    assert sorted(raw_keys(settings.lake_bucket)) == sorted(objects)
    assert db_counts(warehouse_url) == db
    print(f"first import {first_seconds:.1f} s; {report['records_per_second']:,.0f} records/s")
    print("stages", report["stage_seconds"], "reimport stages", again["stage_seconds"])


def test_bulk_import_gzip_rejects_like_the_core_path(
    aws, warehouse_url: str, tmp_path: Path
) -> None:
    """Gzip input; a repeated record is unchanged (no rejection), a record outside the platform's
    days and a broken line are rejected with the codes the core path gives them."""
    settings, _ = aws
    path = write_jsonl(tmp_path / "small.jsonl", 2_000, seed=3)
    lines = path.read_bytes().splitlines()
    first = orjson.loads(lines[0])
    early = {**first, "data": "2019-06-01 00:00:00 UTC", "id_curral": "99999999999999"}
    extra = [lines[0], orjson.dumps(early), b"{not json"]
    body = gzip.compress(b"\n".join(lines + extra) + b"\n")
    client("s3").put_object(Bucket=settings.landing_bucket, Key="incoming/h.jsonl.gz", Body=body)
    result = run_worker(
        f"s3://{settings.landing_bucket}/incoming/h.jsonl.gz",
        f"s3://{settings.processed_bucket}/gz/",
        tmp_path / "ebs",
        "gz",
        None,
        "--chunk-records",
        "700",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(f"s3://{settings.processed_bucket}/gz/report.json")
    assert report["gzip"] is True and report["chunks"] == 3
    assert report["records"] == 2_003
    assert report["loaded"] == 2_001 and report["unchanged"] == 1  # the repeat of line 1
    assert report["rejected_by_code"] == {
        "partition_mismatch": 1,  # routed to _unrouted (outside the days), as on the core path
        "not_an_object": 1,  # a broken line lands as its text, as the file-drop Lambda does
    }
    assert db_counts(warehouse_url)["rows"] == 2_000


def test_missing_input_fails_with_a_clear_error(aws, warehouse_url: str, tmp_path: Path) -> None:
    settings, _ = aws
    result = run_worker(
        f"s3://{settings.landing_bucket}/incoming/nope.jsonl",
        f"s3://{settings.processed_bucket}/fail/",
        tmp_path / "ebs",
        "missing",
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert f"s3://{settings.landing_bucket}/incoming/nope.jsonl" in result.stderr
    report = read_json(f"s3://{settings.processed_bucket}/fail/report.json")
    assert report["status"] == "failed" and "does not exist" in report["error"]
    assert "does not exist" in (tmp_path / "ebs" / "logs" / "missing.log").read_text()
