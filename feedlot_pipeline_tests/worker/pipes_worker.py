"""A small Pipes worker for the dispatch tests, called like ``feedlot worker run JOB …``.

It speaks Dagster Pipes over S3 exactly as the real worker does (PipesS3ContextLoader,
PipesS3MessageWriter) and takes its behaviour from its input object, a real S3 object::

    {"mode": "ok" | "fail" | "sleep", "seconds": 30, "partitions": [{"fazenda", "dia", …}]}

In every mode it writes its pid to ``$FEEDLOT_WORKER_WORKDIR/<pidfile or job-id.pid>`` first, so a
test can check that the process is gone after a cancel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("verb", choices=["worker"])
    parser.add_argument("action", choices=["run"])
    parser.add_argument("job")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--job-id", default="job")
    args = parser.parse_args(argv)

    from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter, open_dagster_pipes

    from feedlot_pipeline.core.aws import client

    workdir = Path(args.workdir or os.environ["FEEDLOT_WORKER_WORKDIR"])
    workdir.mkdir(parents=True, exist_ok=True)
    s3 = client("s3")
    bucket, key = args.input[len("s3://") :].split("/", 1)
    spec = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    (workdir / spec.get("pidfile", f"{args.job_id}.pid")).write_text(str(os.getpid()))
    print(f"worker {args.job} starting on {args.input}", flush=True)
    with open_dagster_pipes(
        context_loader=PipesS3ContextLoader(client=s3),
        message_writer=PipesS3MessageWriter(client=s3, interval=0.3),
    ) as pipes:
        pipes.log.info(f"{args.job}: reading {args.input}")
        if spec["mode"] == "fail":
            print("about to fail", file=sys.stderr, flush=True)
            raise ValueError(f"bad input file {args.input}: line 3 is not JSON")
        if spec["mode"] == "sleep":
            pipes.log.info(f"{args.job}: sleeping {spec['seconds']} s")
            time.sleep(float(spec["seconds"]))
        partitions = spec.get("partitions", [])
        for p in partitions:
            pipes.log.info(f"{args.job}: loaded {p['fazenda']} {p['dia']}")
        out_bucket, out_prefix = args.output[len("s3://") :].split("/", 1)
        s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}summary.json", Body=json.dumps(spec))
        # The two custom messages of the real worker (core.contracts).
        from feedlot_pipeline.core.contracts import PartitionsMessage, ProgressMessage

        pipes.report_custom_message(
            ProgressMessage(
                job_id=args.job_id,
                chunks=1,
                records=0,
                records_per_second=0.0,
                partitions_so_far=len(partitions),
            ).to_dict()
        )
        pipes.report_custom_message(
            PartitionsMessage(
                job=args.job,
                job_id=args.job_id,
                input=args.input,
                import_id="stand-in",
                partitions=partitions,
                totals={},
            ).to_dict()
        )
        pipes.report_asset_materialization(
            asset_key="worker_bulk_import",
            metadata={"records": sum(p.get("records", 0) for p in partitions)},
        )
        pipes.log.info(f"{args.job}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
