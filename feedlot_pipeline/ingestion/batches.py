"""The contract between the consumption sensor and the streaming batch job: its run config.

The sensor (here, in ingestion) builds it; the batch job (``warehouse.jobs``) reads it. Written
down here so the two sides cannot drift apart.
"""

from __future__ import annotations

import dagster as dg

BATCH_OP = "load_noticed_objects"


class NoticedObjects(dg.Config):
    """The raw objects a batch loads, by farm × day partition key (``2024-03-18|fazenda_um``)."""

    objects: dict[str, list[str]]


def batch_run_config(objects: dict[str, list[str]]) -> dict:
    """The run config of the batch job for these objects (partition key → object keys)."""
    return {"ops": {BATCH_OP: {"config": {"objects": objects}}}}
