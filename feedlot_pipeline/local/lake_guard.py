"""The second line of defence for the local lake: ``feedlot local up`` refuses, loudly, to start
over a warehouse whose raw zone is gone.

The lake survives moto's restarts and crashes (``moto_server.py``), but it can still be lost
some other way: its folder deleted, a state folder copied without it, a stack from before the
lake was kept. Then the warehouse holds rows whose raw objects are gone: ``feedlot replay``
skips those days, the reconciliation check passes against what remains, and every run that
loads new records into a day that already had rows fails that check. Nothing would say why.
So when the warehouse has rows and the lake has no raw object at all, ``up`` stops and says
what happened and the one command to go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from feedlot_pipeline.core.lake import RAW_PREFIX
from feedlot_pipeline.local.services import ServiceError
from feedlot_pipeline.local.state import StatePaths, read_record, write_record

ACCEPT_FLAG = "--accept-empty-lake"


@dataclass(frozen=True)
class LakeState:
    warehouse_rows: int
    raw_objects: bool  # at least one object under the raw prefix

    @property
    def lost(self) -> bool:
        return self.warehouse_rows > 0 and not self.raw_objects


def warehouse_rows(warehouse_url: str) -> int:
    """Rows in historico_consumo (PostgreSQL or MySQL)."""
    from sqlalchemy import text

    from feedlot_pipeline.warehouse.engine import create_warehouse_engine

    engine = create_warehouse_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() or 0)
    finally:
        engine.dispose()


def has_raw_objects(lake_bucket: str) -> bool:
    """Whether the lake bucket holds any raw-zone object (a missing bucket holds none)."""
    from feedlot_pipeline.core.aws import client

    s3 = client("s3")
    try:
        found = s3.list_objects_v2(Bucket=lake_bucket, Prefix=f"{RAW_PREFIX}/", MaxKeys=1)
    except s3.exceptions.NoSuchBucket:
        return False
    return found.get("KeyCount", 0) > 0


def check(
    paths: StatePaths,
    state: LakeState,
    lake_bucket: str,
    accept: bool,
    embedded_warehouse: bool,
    state_option: str = "",
) -> str | None:
    """None when the lake and the warehouse agree; a note when an empty lake was accepted (now
    with ``accept``, or by an earlier ``up``); ServiceError otherwise."""
    if not state.lost:
        return None
    accepted = read_record(paths.accepted_empty_lake)
    if accept and not accepted:
        accepted = {
            "accepted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "warehouse_rows": state.warehouse_rows,
            "lake_bucket": lake_bucket,
        }
        write_record(paths.accepted_empty_lake, accepted)
    if accepted:
        return (
            f"the lake {lake_bucket} has no raw objects while the warehouse holds "
            f"{state.warehouse_rows} row(s): going on as accepted ({ACCEPT_FLAG}, "
            f"{accepted.get('accepted_at', '?')}); those rows cannot be replayed"
        )
    raise ServiceError(refusal(paths.lake, state, lake_bucket, embedded_warehouse, state_option))


def refusal(
    journal: Path, state: LakeState, lake_bucket: str, embedded: bool, state_option: str = ""
) -> str:
    opt = f" {state_option}" if state_option else ""
    start_over = (
        f"  start over with an empty warehouse too:  feedlot local down --wipe{opt} && "
        f"feedlot local up{opt}"
        if embedded
        else "  start over: empty the configured warehouse (FEEDLOT_WAREHOUSE_URL) yourself"
    )
    return (
        "refusing to start: the local lake is gone but the warehouse is not.\n"
        f"  The warehouse holds {state.warehouse_rows} row(s) in historico_consumo, and the lake "
        f"bucket {lake_bucket} has no raw object at all (nothing under {RAW_PREFIX}/).\n"
        f"  The lake's journal ({journal}) was deleted or emptied, or was written by a moto "
        "that kept nothing in it (a stack from before the lake was kept).\n"
        "  Going on would leave those rows without raw data: `feedlot replay` skips their days, "
        "and every run that loads new records into a day that already has rows fails its "
        "reconciliation check.\n"
        f"  To go on with the warehouse as it is:    feedlot local up {ACCEPT_FLAG}{opt}\n"
        f"{start_over}"
    )
