"""Writing a batch run's many per-partition events to Dagster in few round trips.

A streaming batch logs a raw_consumption and a historico_consumo materialization for every
partition it loaded (often hundreds). ``context.log_event`` writes them one by one; Dagster's
own batch path (used for the outputs of partition-range runs) writes materializations in one
multi-row INSERT when ``DAGSTER_EVENT_BATCH_SIZE`` is set for the run worker (the local stack and
deploy/dagster set it). This helper sends ours through that path: the same events, in the same
run, step and order, with batch markers.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, generate_event_batch_id


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
