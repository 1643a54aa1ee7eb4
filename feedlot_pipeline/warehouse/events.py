"""Writing a batch run's many per-partition events to Dagster in few round trips.

A streaming batch logs a raw_consumption and a historico_consumo materialization and a check
result for every partition it loaded (often hundreds). ``context.log_event`` writes them one by
one; Dagster's own batch path (used for the outputs of partition-range runs) hands events with
batch markers to the storage in groups of ``DAGSTER_EVENT_BATCH_SIZE`` when that is set for the
run worker (the local stack and deploy/dagster set it). dagster-postgres writes a group of
materializations in one multi-row INSERT; ``core.dagster_instance.PooledPostgresStorage`` does
the same for check results (dagster-postgres would refuse the group and fall back to one write
per event). These helpers send ours through that path: the same events, in the same run, step
and order, with batch markers.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.events import (
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    generate_event_batch_id,
)


def log_materializations(
    context: dg.OpExecutionContext, materializations: Sequence[dg.AssetMaterialization]
) -> None:
    """Log materializations of this step as one batch (written together where enabled)."""
    if not materializations:
        return
    step = context._step_execution_context  # noqa: SLF001 - what log_event itself uses
    batch_id = generate_event_batch_id()
    last = len(materializations) - 1
    for i, materialization in enumerate(materializations):
        event = DagsterEvent.asset_materialization(
            step, materialization, DagsterEventBatchMetadata(batch_id, i == last)
        )
        context._events.append(event)  # noqa: SLF001 - as log_event does, for the step's books


def log_check_evaluations(
    context: dg.OpExecutionContext, evaluations: Sequence[dg.AssetCheckEvaluation]
) -> None:
    """Log check results of this step as one batch (as ``log_materializations``)."""
    if not evaluations:
        return
    step = context._step_execution_context  # noqa: SLF001 - what log_event itself uses
    batch_id = generate_event_batch_id()
    last = len(evaluations) - 1
    for i, evaluation in enumerate(evaluations):
        # DagsterEvent.from_step logs the event as it builds it: built once, with the message
        # DagsterEvent.asset_check_evaluation would give it.
        verdict = "passed." if evaluation.passed else "did not pass."
        event = DagsterEvent.from_step(
            DagsterEventType.ASSET_CHECK_EVALUATION,
            step,
            evaluation,
            message=f"Asset check '{evaluation.check_name}' on "
            f"'{evaluation.asset_key.to_user_string()}' {verdict}",
            batch_metadata=DagsterEventBatchMetadata(batch_id, i == last),
        )
        context._events.append(event)  # noqa: SLF001 - as log_event does
