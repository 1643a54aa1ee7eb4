"""worker_bulk_import: run the bulk import on the EC2 worker through SSM and Dagster Pipes.

The worker reports its own materialization of ``worker_bulk_import`` and, in a custom message,
the (fazenda, dia) partitions it loaded; this asset turns that list into ``historico_consumo``
partition materializations, so Dagster shows every partition the worker touched, registering
farms it has not seen yet first (as the ingestion sensor does).
"""

import shlex
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from feedlot_pipeline.core.contracts import PartitionsMessage
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.worker.resources import WorkerResource
from feedlot_pipeline.worker.runtime import run_args

WORKER_ASSET = "worker_bulk_import"
HISTORICO_CONSUMO = dg.AssetKey("historico_consumo")
JOB = "bulk_import"
PARTITIONS = PartitionsMessage.model_fields["type"].default


class BulkImportConfig(dg.Config):
    """Which landing file to import and where the worker writes its outputs."""

    input_uri: str
    output_uri: str = ""  # default: s3://<processed bucket>/worker-output/<run_id>/


def touched_partitions(messages: Iterable[Any]) -> list[dict[str, Any]]:
    """The partition entries of the worker's ``PartitionsMessage``s, merged per (fazenda, dia).

    Counts are summed when a partition is reported more than once. Other messages (per-chunk
    progress) are skipped; a partitions message that does not parse fails the step, since the
    worker and this code location disagree on the contract.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for message in messages:
        if (
            not isinstance(message, Mapping)
            or message.get("type") != PartitionsMessage.model_fields["type"].default
        ):
            continue
        parsed = PartitionsMessage.model_validate(message)
        for entry in parsed.partitions:
            key = (entry.fazenda, entry.dia[:10])
            into = merged.setdefault(key, {"fazenda": key[0], "dia": key[1]})
            for name, value in entry.model_dump().items():
                if name in ("fazenda", "dia"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    into[name] = into.get(name, 0) + value
                else:
                    into[name] = value
    return [merged[k] for k in sorted(merged)]


@dg.asset(
    name=WORKER_ASSET,
    group_name="worker",
    description="Bulk import of a large landing file, run on the EC2 worker (SSM + Pipes); "
    "materializes every historico_consumo partition it loaded.",
    kinds={"ec2", "ssm"},
)
def worker_bulk_import(
    context: dg.AssetExecutionContext, config: BulkImportConfig, worker: WorkerResource
) -> dg.MaterializeResult:
    output_uri = config.output_uri or worker.default_output_uri(context.run_id)
    command = [
        *shlex.split(worker.command),
        *run_args(JOB, config.input_uri, output_uri, context.run_id),
    ]
    invocation = worker.pipes_client().run(
        context=context,
        command=command,
        timeout_seconds=worker.timeout_seconds,
        comment=f"feedlot {JOB} {context.run_id}",
        env=worker.command_env,
        **worker.target(),
    )
    partitions = touched_partitions(invocation.get_custom_messages())
    farms = sorted({p["fazenda"] for p in partitions})
    known = set(context.instance.get_dynamic_partitions(farms_partitions.name))
    new_farms = [f for f in farms if f not in known]
    if new_farms:
        context.instance.add_dynamic_partitions(farms_partitions.name, new_farms)
    for entry in partitions:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=HISTORICO_CONSUMO,
                partition=str(farm_day_key(entry["fazenda"], entry["dia"])),
                description=f"loaded by the worker's {JOB} (run {context.run_id})",
                metadata={
                    **{k: v for k, v in entry.items() if k not in ("fazenda", "dia")},
                    "input_uri": config.input_uri,
                    "source": f"worker:{JOB}",
                },
            )
        )
    context.log.info(
        f"worker touched {len(partitions)} partition(s) of {len(farms)} farm(s)"
        + (f"; registered farms {new_farms}" if new_farms else "")
    )
    result = invocation.get_materialize_result()
    metadata = {
        **(result.metadata or {}),
        "input_uri": config.input_uri,
        "output_uri": output_uri,
        "partitions_touched": len(partitions),
    }
    return dg.MaterializeResult(
        asset_key=result.asset_key,
        metadata=metadata,
        check_results=result.check_results,
        data_version=result.data_version,
    )
