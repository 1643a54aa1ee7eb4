"""The ``feedlot`` console script: everything a person runs outside the Dagster UI.

Subcommands live beside the code they drive and are imported only when called, so
``feedlot --help`` stays fast and one broken optional part does not hide the others.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "local": "feedlot_pipeline.tools.local:local",
    "produce": "feedlot_pipeline.tools.produce.command:produce",
    "demo": "feedlot_pipeline.tools.demo:demo",
    "dev": "feedlot_pipeline.tools.dev:dev",
    "db": "feedlot_pipeline.tools.db:db",
    "clients": "feedlot_pipeline.tools.db:clients",
    "bench": "feedlot_pipeline.tools.bench.load:bench",
    "latency": "feedlot_pipeline.tools.latency:latency",
    "soak": "feedlot_pipeline.tools.soak:soak",
    "chaos": "feedlot_pipeline.tools.chaos:chaos",
    "api-bench": "feedlot_pipeline.tools.bench.api:api_bench",
    "lake-bench": "feedlot_pipeline.tools.bench.lake:lake_bench",
    "dlq": "feedlot_pipeline.tools.dlq:dlq",
    "replay": "feedlot_pipeline.tools.replay:replay",
    "worker": "feedlot_pipeline.tools.worker:worker",
    "metrics": "feedlot_pipeline.tools.metrics:metrics",
    "dashboards": "feedlot_pipeline.tools.dashboards:dashboards",
    "query": "feedlot_pipeline.tools.analytics:query",
    "report": "feedlot_pipeline.tools.analytics:report",
    "bench-analytics": "feedlot_pipeline.tools.bench.analytics:bench_analytics",
}

HELP: dict[str, str] = {
    "local": "Start, stop or inspect the local stack (moto, PostgreSQL, Lambda emulation).",
    "produce": "Send consumption records: SNS topic (default), HTTP API or Firehose.",
    "demo": "Run the main job end to end on the local stack and print what landed.",
    "dev": "Local stack + Dagster UI until Ctrl-C or SIGTERM (what `make dev` runs).",
    "db": "Warehouse schema migrations.",
    "clients": "Client (cod_cliente) → farm (fazenda) reference data.",
    "bench": "Benchmark the warehouse load path against raw COPY.",
    "latency": "Measure publish → warehouse latency on a running stack (p50/p95).",
    "chaos": "Break one part of the local stack at a time while records stream in; lost, drain.",
    "soak": "Stream N farms × R records/s through a running stack; latency, queue, runs, CPU.",
    "api-bench": "Measure POST /consumo throughput (records/s) and latency with C clients.",
    "lake-bench": "What keeping the local lake costs moto (requests/s) and its replay time.",
    "dlq": "Inspect (list, show) and redrive dead letters of the sensor queue.",
    "replay": "Re-run farm × day partitions from the raw zone (idempotent: writes nothing twice).",
    "worker": "EC2 worker jobs (run bulk_import …) and their benchmark.",
    "metrics": "Terminal view of the platform's CloudWatch metrics over the last N minutes.",
    "dashboards": "Regenerate the Grafana and CloudWatch dashboards (deploy/) from the code.",
    "query": "SQL over the curated Parquet lake (DuckDB on pyarrow datasets in S3).",
    "report": "Write the farm report (HTML) of a farm and day or month; print its path.",
    "bench-analytics": "Benchmark summary + describe + Parquet against the naive pandas path.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        """Every command, with a missing AWS credential turned into what to do about it."""
        try:
            return super().invoke(ctx)
        except Exception as err:
            from botocore.exceptions import NoCredentialsError  # only when something failed

            if isinstance(err, NoCredentialsError):
                raise click.ClickException(
                    f'{err}. For the local stack run `eval "$(feedlot local env)"` (or '
                    "`set -a; . .feedlot/env; set +a`) in this shell first; for AWS, configure "
                    "credentials (AWS_PROFILE, an instance role, …)."
                ) from None
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP[name]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
def main() -> None:
    """feedlot_pipeline: feed-consumption records from farms to the warehouse."""


if __name__ == "__main__":
    main()
