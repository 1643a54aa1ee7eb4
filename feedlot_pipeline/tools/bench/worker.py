"""``feedlot worker bench``: the worker's bulk import against the core load path, same file.

1. generate N synthetic records as JSON Lines (``core.synthetic.write_jsonl``, streamed);
2. AWS: the running local stack when AWS_ENDPOINT_URL is set (the file goes to its landing bucket
   under ``bench/``, outside the file-drop prefix, so no Lambda picks it up), else a moto server
   started here; the worker's raw zone and output go to scratch buckets, removed afterwards, so
   the stack's lake is left alone;
3. a scratch database per contender on the server of --url / FEEDLOT_WAREHOUSE_URL, else on an
   embedded PostgreSQL started here (as ``feedlot bench`` does);
4. (a) ``feedlot worker run bulk_import`` in a child process (download, parse, route, raw-zone
   writes, load); (b) the core load path ``warehouse.loader.load_file`` on the same file in a
   fresh child process; (c) optionally the worker again (a re-import: must write nothing).

Figures depend on the machine and on what else runs on it: compare runs on one machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings, export, scoped_environment
from feedlot_pipeline.worker.runtime import run_args


def _empty_bucket(bucket: str) -> None:
    s3 = client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def _start_moto(work: Path, stack: ExitStack) -> None:
    """A moto server for this benchmark only, with test credentials, provisioned."""
    from feedlot_pipeline.local.provision import provision
    from feedlot_pipeline.local.services import free_port, start_moto

    port = free_port()
    proc = start_moto(port, work / "moto.log")

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    stack.callback(stop)
    export({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    export({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}, override=False)
    provision(Settings())


def _worker(env: dict[str, str], input_uri: str, output_uri: str, workdir: Path, job: str) -> dict:
    """Run the worker as its own process (as SSM would) and return its report."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedlot_pipeline.tools.cli",
            *run_args("bulk_import", input_uri, output_uri, job, str(workdir)),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise click.ClickException(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    bucket, prefix = output_uri[5:].split("/", 1)
    body = client("s3").get_object(Bucket=bucket, Key=f"{prefix}report.json")["Body"].read()
    return {**json.loads(body), "wall_seconds": wall}


def run_bench(
    *, records: int, seed: int, bad_fraction: float, url: str | None, reimport: bool
) -> None:
    """The benchmark; prints the figures."""
    from feedlot_pipeline.tools.bench.load import (
        _in_child,
        generate_file,
        scratch_database,
        server_or_embedded,
    )
    from feedlot_pipeline.warehouse.loader import DEFAULT_CHUNK_ROWS

    url = url or Settings().warehouse_url_value()
    with ExitStack() as stack:
        stack.enter_context(scoped_environment())  # what the bench exports is undone
        work = Path(tempfile.mkdtemp(prefix="feedlot-worker-bench-"))
        stack.callback(lambda: shutil.rmtree(work, ignore_errors=True))
        path = work / "records.jsonl"
        generate_file(path, records, seed, bad_fraction)

        endpoint = Settings().aws_endpoint_url
        if endpoint:
            click.echo(f"AWS: the local stack at {endpoint}")
        else:
            click.echo("AWS: no AWS_ENDPOINT_URL; starting a moto server …")
            _start_moto(work, stack)
        settings = Settings()
        tag = uuid.uuid4().hex[:8]
        s3 = client("s3")
        key = f"bench/worker-{tag}.jsonl"
        s3.upload_file(str(path), settings.landing_bucket, key)
        stack.callback(lambda: s3.delete_object(Bucket=settings.landing_bucket, Key=key))
        lake, out = f"feedlot-bench-{tag}-lake", f"feedlot-bench-{tag}-out"
        for bucket in (lake, out):
            s3.create_bucket(Bucket=bucket)
            stack.callback(_empty_bucket, bucket)

        url = server_or_embedded(stack, url, work)
        worker_db, core_db = scratch_database(stack, url), scratch_database(stack, url)

        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES_")} | {
            "FEEDLOT_WAREHOUSE_URL": worker_db,
            "FEEDLOT_LAKE_BUCKET": lake,
        }
        input_uri = f"s3://{settings.landing_bucket}/{key}"
        click.echo("(a) worker bulk import …")
        first = _worker(env, input_uri, f"s3://{out}/first/", work / "ebs", f"bench-{tag}-1")
        click.echo("(b) core load path (load_file) …")
        core = _in_child(core_db, path, DEFAULT_CHUNK_ROWS)
        again = None
        if reimport:
            click.echo("(c) worker re-import …")
            again = _worker(env, input_uri, f"s3://{out}/again/", work / "ebs", f"bench-{tag}-2")
    _print(records, first, core, again)


def _print(records: int, worker: dict[str, Any], core: dict[str, Any], again: dict | None) -> None:
    rate = worker["records"] / worker["seconds"]
    core_rate = core["landed"] / core["seconds"]
    click.echo(
        f"\nrecords {records:,}: {worker['loaded']:,} loaded, {worker['rejected']:,} rejected; "
        f"{worker['partitions_touched']:,} partitions, {worker['raw_objects']:,} raw objects"
    )
    click.echo(
        f"worker bulk import   {worker['seconds']:8.2f} s {rate:>10,.0f} records/s   "
        f"peak RSS {worker['peak_rss_mb']:,.0f} MiB  (process wall {worker['wall_seconds']:.1f} s;"
        f" stages {worker['stage_seconds']})"
    )
    click.echo(
        f"core load path       {core['seconds']:8.2f} s {core_rate:>10,.0f} records/s   "
        f"peak RSS {core['max_rss_mb']:,.0f} MiB"
    )
    if again is not None:
        click.echo(
            f"worker re-import     {again['seconds']:8.2f} s "
            f"{again['records'] / again['seconds']:>10,.0f} records/s   inserted "
            f"{again['inserted']}, updated {again['updated']}, raw objects written "
            f"{again['raw_objects_written']}"
        )
    click.echo(f"\nworker / core records/s = {rate / core_rate:.2f}")
    click.echo("(figures depend on the machine and its load: compare runs on one machine)")
