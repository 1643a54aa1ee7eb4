"""The Dagster side: ebs_backup_job run in process on the moto server, its materialization metadata,
the schedule's run request, and the resource built from the environment.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pytest

from feedlot_pipeline.backups.assets import ebs_snapshots, report_metadata
from feedlot_pipeline.backups.jobs import ebs_backup_job
from feedlot_pipeline.backups.resources import EbsBackupResource
from feedlot_pipeline.backups.schedules import build_ebs_backup_schedule
from feedlot_pipeline.backups.snapshots import (
    RUN_ID_KEY,
    BackupPolicy,
    BackupReport,
    Created,
    Deleted,
)
from feedlot_pipeline_tests.backups.helpers import make_volume, next_second, snapshots_of


def _defs(resource: EbsBackupResource) -> dg.Definitions:
    """What definitions.py wires, with the test's resource."""
    return dg.Definitions(
        assets=[ebs_snapshots],
        jobs=[ebs_backup_job],
        schedules=[build_ebs_backup_schedule()],
        resources={"ebs_backup": resource},
    )


def _table(metadata: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [dict(record.data) for record in metadata[name].records]


def test_job_snapshots_prunes_and_reports(ec2: Any, settings: BackupPolicy) -> None:
    key = settings.tag_key
    volume = make_volume(ec2, {key: "true", "Name": "worker-data"})
    skipped = make_volume(ec2, {key: "no"})
    resource = EbsBackupResource(tag_key=key, tag_value="true", keep=1, max_age_days=30)
    defs = _defs(resource)
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("ebs_backup_job")

    with dg.DagsterInstance.ephemeral() as instance:
        metadata: list[dict[str, Any]] = []
        snaps: list[str] = []
        for run in range(2):
            if run:
                next_second()
            result = job.execute_in_process(instance=instance)
            assert result.success
            (materialization,) = result.asset_materializations_for_node("ebs_snapshots")
            metadata.append(dict(materialization.metadata))
            created = _table(metadata[-1], "created")
            # The snapshot carries the run that made it.
            (snap,) = [c["snapshot"] for c in created]
            assert snapshots_of(ec2, volume)[snap][RUN_ID_KEY] == result.run_id
            snaps.append(snap)

    first, last = metadata
    assert _table(first, "created") == [
        {"volume": volume, "volume_name": "worker-data", "snapshot": snaps[0]}
    ]
    assert first["created_count"].value == 1 and first["deleted_count"].value == 0
    assert _table(first, "deleted") == []
    assert last["created_count"].value == 1 and last["deleted_count"].value == 1
    (deleted,) = _table(last, "deleted")
    assert deleted["snapshot"] == snaps[0]
    assert deleted["volume"] == volume and deleted["reason"] == "beyond the newest 1 (#2)"
    assert last["kept_per_volume"].value == {volume: 1}
    assert last["selection"].value == f"{key}=true"
    assert "errors" not in last
    assert set(snapshots_of(ec2, volume)) == set(snaps[1:])
    assert snapshots_of(ec2, skipped) == {}


def test_job_with_no_tagged_volume_succeeds_empty(settings: BackupPolicy) -> None:
    resource = EbsBackupResource(tag_key=settings.tag_key, tag_value="true")
    result = dg.materialize(
        [ebs_snapshots], resources={"ebs_backup": resource}, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("ebs_snapshots")
    assert materialization.metadata["volumes"].value == 0
    assert materialization.metadata["created_count"].value == 0


def test_failure_metadata_keeps_what_was_done_and_the_errors() -> None:
    """What the asset attaches to dg.Failure when some volume failed (the run still fails)."""
    started = datetime(2024, 3, 1, 3, 0, tzinfo=timezone.utc)
    report = BackupReport(
        volumes=["vol-a", "vol-b"],
        created=[Created("vol-a", "snap-new", "data")],
        deleted=[Deleted("snap-old", "vol-a", "beyond the newest 7 (#8)", started)],
        kept={"vol-a": 7},
        errors=["vol-b: CreateSnapshot failed: UnauthorizedOperation: denied"],
    )
    metadata = report_metadata(report, BackupPolicy())
    assert metadata["created_count"].value == 1 and metadata["deleted_count"].value == 1
    assert _table(metadata, "deleted") == [
        {
            "snapshot": "snap-old",
            "volume": "vol-a",
            "started": "2024-03-01T03:00:00+00:00",
            "reason": "beyond the newest 7 (#8)",
        }
    ]
    assert metadata["errors"].value == report.errors
    assert metadata["retention"].value.startswith("newest 7, none older than 30 days")


def test_schedule_is_daily_utc_and_requests_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDLOT_BACKUP_CRON", raising=False)
    schedule = build_ebs_backup_schedule()
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "ebs_backup_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    monkeypatch.setenv("FEEDLOT_BACKUP_CRON", "30 1 * * *")
    schedule = build_ebs_backup_schedule()
    assert schedule.cron_schedule == "30 1 * * *"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2024, 3, 1, 1, 30, tzinfo=timezone.utc)
    )
    (request,) = schedule.evaluate_tick(context).run_requests or []
    # The schedule targets the job itself, so the request names no other job.
    assert isinstance(request, dg.RunRequest) and request.job_name is None
    assert request.tags["dagster/schedule_name"] == "ebs_backup_schedule"


def test_schedule_refuses_a_bad_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDLOT_BACKUP_CRON", "every day at three")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="cron"):
        build_ebs_backup_schedule()


def test_resource_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDLOT_BACKUP_TAG_KEY", "snap")
    monkeypatch.setenv("FEEDLOT_BACKUP_TAG_VALUE", "yes")
    monkeypatch.setenv("FEEDLOT_BACKUP_KEEP", "4")
    monkeypatch.setenv("FEEDLOT_BACKUP_MAX_AGE_DAYS", "14")
    resource = EbsBackupResource.from_env()
    assert resource.settings() == BackupPolicy("snap", "yes", 4, 14)
    monkeypatch.setenv("FEEDLOT_BACKUP_KEEP", "0")
    with pytest.raises(ValueError, match="at least 1"):
        EbsBackupResource.from_env()
