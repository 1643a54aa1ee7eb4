"""``feedlot worker``: the EC2 worker's entry point (``run JOB``) and its benchmark (``bench``).

Dagster dispatches ``feedlot worker run bulk_import --input s3://… --output s3://… --job-id …``
through SSM with the Pipes bootstrap variables in front of it; a person can run the same command
by hand. Jobs are registered in ``JOBS`` by name and imported only when run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

# name -> "module:function" taking a runtime.JobContext and returning the job's result (a dict)
JOBS: dict[str, str] = {
    "bulk_import": "feedlot_pipeline.worker.bulk_import:bulk_import",
}


def job_function(name: str):  # noqa: ANN201 - a runtime.JobFunction
    module, attr = JOBS[name].split(":")
    return getattr(importlib.import_module(module), attr)


@click.group()
def worker() -> None:
    """Jobs that run on the EC2 worker (dispatched by Dagster through SSM)."""


@worker.command("run")
@click.argument("job", type=click.Choice(sorted(JOBS)))
@click.option("--input", "input_uri", required=True, metavar="S3_URI", help="s3://bucket/key")
@click.option(
    "--output",
    "output_uri",
    required=True,
    metavar="S3_URI",
    help="s3://bucket/prefix/ for report.json and the job's log.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work dir for temporary files and logs [default: FEEDLOT_WORKER_WORKDIR].",
)
@click.option("--job-id", default=None, help="Names the log file [default: job-time-pid].")
@click.option(
    "--chunk-records",
    type=click.IntRange(min=1),
    default=None,
    help="Records per chunk [default: FEEDLOT_WORKER_CHUNK_RECORDS]; part of the raw-zone keys.",
)
def run(
    job: str,
    input_uri: str,
    output_uri: str,
    workdir: Path | None,
    job_id: str | None,
    chunk_records: int | None,
) -> None:
    """Run JOB; report to Dagster through Pipes when started by it. Exit 1 on failure."""
    from feedlot_pipeline.worker.runtime import run_job

    try:
        result = run_job(
            job,
            job_function(job),
            input_uri=input_uri,
            output_uri=output_uri,
            workdir=workdir,
            job_id=job_id,
            options={"chunk_records": chunk_records},
        )
    except Exception as err:  # noqa: BLE001 - reported (Pipes, log, report.json) already
        click.echo(f"Error: worker {job} failed: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    click.echo(
        f"{job} succeeded: {result.get('records', 0):,} records, "
        f"{result.get('loaded', 0):,} loaded, {result.get('rejected', 0):,} rejected; "
        f"report {result.get('report_uri', '-')}"
    )


@worker.command("bench")
@click.option("--records", default=1_000_000, show_default=True, help="Records to generate.")
@click.option("--seed", default=7, show_default=True)
@click.option("--bad-fraction", default=0.0, show_default=True, help="Share of broken records.")
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Database server URL for the scratch databases [default: FEEDLOT_WAREHOUSE_URL's "
    "server, else an embedded PostgreSQL].",
)
@click.option("--reimport", is_flag=True, help="Also time a second worker run of the same file.")
def bench(records: int, seed: int, bad_fraction: float, url: str | None, reimport: bool) -> None:
    """Worker bulk import vs the core load path on the same synthetic file."""
    from feedlot_pipeline.tools.bench.worker import run_bench

    run_bench(records=records, seed=seed, bad_fraction=bad_fraction, url=url, reimport=reimport)
