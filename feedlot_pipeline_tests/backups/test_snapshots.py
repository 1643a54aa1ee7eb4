"""snapshots.py against the moto server: selection by tag, tags at creation, retention by count and
by age (the real StartTime, with the clock moved instead of the snapshots), foreign snapshots left
alone, and one volume's failure not stopping the others.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from feedlot_pipeline.backups.snapshots import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    RUN_ID_KEY,
    SOURCE_VOLUME_KEY,
    BackupError,
    BackupPolicy,
    BackupReport,
    backup_volumes,
    find_volumes,
    plan_prune,
    run_backup,
)
from feedlot_pipeline_tests.backups.helpers import make_volume, next_second, snapshots_of

T0 = datetime(2024, 3, 1, 3, 0, tzinfo=timezone.utc)


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FEEDLOT_BACKUP_TAG_KEY",
        "FEEDLOT_BACKUP_TAG_VALUE",
        "FEEDLOT_BACKUP_KEEP",
        "FEEDLOT_BACKUP_MAX_AGE_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert BackupPolicy.from_env() == BackupPolicy("Backup", "true", 7, 30)
    monkeypatch.setenv("FEEDLOT_BACKUP_TAG_KEY", "snapshot")
    monkeypatch.setenv("FEEDLOT_BACKUP_TAG_VALUE", "daily")
    monkeypatch.setenv("FEEDLOT_BACKUP_KEEP", "3")
    monkeypatch.setenv("FEEDLOT_BACKUP_MAX_AGE_DAYS", "10")
    assert BackupPolicy.from_env() == BackupPolicy("snapshot", "daily", 3, 10)
    monkeypatch.setenv("FEEDLOT_BACKUP_KEEP", "seven")
    with pytest.raises(ValueError, match="FEEDLOT_BACKUP_KEEP=.seven. is invalid"):
        BackupPolicy.from_env()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"keep": 0}, "FEEDLOT_BACKUP_KEEP must be at least 1"),
        ({"max_age_days": 0}, "FEEDLOT_BACKUP_MAX_AGE_DAYS must be at least 1"),
        ({"tag_key": ""}, "tag key"),
        ({"tag_key": "aws:cloudformation:stack-name"}, "tag key"),
    ],
)
def test_settings_refuse_dangerous_values(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(BackupPolicy(), **changes)


# --- the retention rule, on plain data --------------------------------------------------------


def _snap(snapshot_id: str, days_old: float, state: str = "completed") -> dict[str, Any]:
    return {"SnapshotId": snapshot_id, "StartTime": T0 - timedelta(days=days_old), "State": state}


def _plan(snapshots: list[dict[str, Any]], keep: int, max_age_days: int) -> tuple[dict, int]:
    doomed, kept = plan_prune(snapshots, BackupPolicy(keep=keep, max_age_days=max_age_days), T0)
    return {s["SnapshotId"]: reason for s, reason in doomed}, kept


def test_plan_keeps_the_newest_n() -> None:
    snaps = [_snap(f"snap-{i}", days_old=i) for i in range(5)]
    doomed, kept = _plan(snaps, keep=3, max_age_days=30)
    assert set(doomed) == {"snap-3", "snap-4"} and kept == 3
    assert doomed["snap-3"] == "beyond the newest 3 (#4)"


def test_plan_drops_snapshots_older_than_max_age() -> None:
    snaps = [_snap("new", 1), _snap("mid", 29.9), _snap("old", 30.1)]
    doomed, kept = _plan(snaps, keep=7, max_age_days=30)
    assert doomed == {"old": "older than 30 days"} and kept == 2


def test_plan_never_drops_the_newest_however_old() -> None:
    doomed, kept = _plan([_snap("a", 400), _snap("b", 90), _snap("c", 95)], keep=7, max_age_days=30)
    assert set(doomed) == {"c", "a"} and kept == 1


def test_plan_other_states_neither_count_nor_go_until_old() -> None:
    snaps = [
        _snap("pending-today", 0, "pending"),
        _snap("done-1", 1),
        _snap("done-2", 2),
        _snap("error-old", 31, "error"),
        _snap("error-young", 3, "error"),
    ]
    doomed, kept = _plan(snaps, keep=2, max_age_days=30)
    # The pending one does not push done-2 out; only the old failed one goes.
    assert doomed == {"error-old": "error for over 30 days"} and kept == 4


# --- against the moto server ------------------------------------------------------------------


def _managed(ec2: Any, volume_id: str) -> set[str]:
    return {
        sid
        for sid, tags in snapshots_of(ec2, volume_id).items()
        if tags.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE
    }


def test_snapshots_only_tagged_volumes_tagged_at_creation(ec2: Any, settings: BackupPolicy) -> None:
    key = settings.tag_key
    named = make_volume(ec2, {key: "true", "Name": "worker-data"})
    unnamed = make_volume(ec2, {key: "true"})
    other_value = make_volume(ec2, {key: "false", "Name": "scratch"})
    untagged = make_volume(ec2, {"Name": "untagged"})
    assert [v["VolumeId"] for v in find_volumes(ec2, settings)] == sorted([named, unnamed])

    report = run_backup(settings, run_id="run-1")

    assert report.volumes == sorted([named, unnamed]) and not report.errors
    assert {c.volume for c in report.created} == {named, unnamed}
    (snap,) = [c.snapshot for c in report.created if c.volume == named]
    assert snapshots_of(ec2, named) == {
        snap: {
            MANAGED_BY_KEY: MANAGED_BY_VALUE,
            SOURCE_VOLUME_KEY: named,
            RUN_ID_KEY: "run-1",
            "Name": "worker-data",
        }
    }
    (described,) = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
    assert described["Description"] == f"feedlot EBS backup of {named} (worker-data)"
    assert "Name" not in next(iter(snapshots_of(ec2, unnamed).values()))
    assert snapshots_of(ec2, other_value) == {} and snapshots_of(ec2, untagged) == {}
    assert report.kept == {named: 1, unnamed: 1} and report.deleted == []


def test_runs_keep_the_newest_n_and_never_touch_foreign_snapshots(
    ec2: Any, settings: BackupPolicy
) -> None:
    settings = dataclasses.replace(settings, keep=2)
    volume = make_volume(ec2, {settings.tag_key: "true"})
    untagged_volume = make_volume(ec2, {})
    # Someone else's snapshots of the same volume: by hand (untagged), by DLM, by another tool.
    foreign = {
        ec2.create_snapshot(VolumeId=volume, TagSpecifications=spec)["SnapshotId"]
        for spec in (
            [],
            [
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": MANAGED_BY_KEY, "Value": "feedlot-dlm"}],
                }
            ],
            [
                {
                    "ResourceType": "snapshot",
                    "Tags": [{"Key": "managed-by", "Value": MANAGED_BY_VALUE}],
                }
            ],
        )
    }
    # One of ours, of a volume no longer selected: not pruned (as DLM leaves untargeted volumes).
    orphan = ec2.create_snapshot(
        VolumeId=untagged_volume,
        TagSpecifications=[
            {
                "ResourceType": "snapshot",
                "Tags": [{"Key": MANAGED_BY_KEY, "Value": MANAGED_BY_VALUE}],
            }
        ],
    )["SnapshotId"]

    created: list[str] = []
    deleted: list[str] = []
    reasons: set[str] = set()
    for run in range(3):
        if run:
            next_second()
        report = run_backup(settings, run_id=f"run-{run}")
        created += [c.snapshot for c in report.created]
        deleted += [d.snapshot for d in report.deleted]
        reasons |= {d.reason for d in report.deleted}
        assert report.kept == {volume: min(run + 1, 2)}
        assert _managed(ec2, volume) == set(created[-2:])

    assert deleted == created[:1]
    assert reasons == {"beyond the newest 2 (#3)"}
    assert set(snapshots_of(ec2, volume)) == foreign | set(created[-2:])
    assert set(snapshots_of(ec2, untagged_volume)) == {orphan}


def test_age_comes_from_start_time(ec2: Any, settings: BackupPolicy) -> None:
    """moto stamps StartTime itself; instead of backdating snapshots, the runs' clock moves."""
    volume = make_volume(ec2, {settings.tag_key: "true"})
    foreign = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    first = run_backup(settings).created[0].snapshot
    next_second()
    second = run_backup(settings).created[0].snapshot
    started = {
        s["SnapshotId"]: s["StartTime"]
        for s in ec2.describe_snapshots(SnapshotIds=[first, second])["Snapshots"]
    }
    assert started[first] < started[second]

    # 30 days after `second` less half a second: `first` is past max age, `second` is not.
    now = started[second] + timedelta(days=30) - timedelta(seconds=0.5)
    report = run_backup(settings, now=now)
    third = report.created[0].snapshot
    assert [(d.snapshot, d.reason) for d in report.deleted] == [(first, "older than 30 days")]
    assert report.deleted[0].started == started[first]
    assert _managed(ec2, volume) == {second, third}

    # A year on, everything is old: only the newest survives, and the foreign one.
    next_second()
    report = run_backup(settings, now=started[second] + timedelta(days=365))
    fourth = report.created[0].snapshot
    assert {d.snapshot for d in report.deleted} == {second, third}
    assert set(snapshots_of(ec2, volume)) == {foreign, fourth}


def test_one_failing_volume_does_not_stop_the_others(ec2: Any, settings: BackupPolicy) -> None:
    settings = dataclasses.replace(settings, keep=1)
    first = make_volume(ec2, {settings.tag_key: "true"})
    last = make_volume(ec2, {settings.tag_key: "true"})
    old = run_backup(settings).created
    next_second()
    # A volume deleted between DescribeVolumes and CreateSnapshot, between two good ones.
    gone = {"VolumeId": "vol-0123456789abcdef0", "Tags": []}
    report = backup_volumes(ec2, settings, [{"VolumeId": first}, gone, {"VolumeId": last}])

    assert {c.volume for c in report.created} == {first, last}
    assert {d.snapshot for d in report.deleted} == {c.snapshot for c in old}
    (error,) = report.errors
    assert error.startswith("vol-0123456789abcdef0: CreateSnapshot failed: InvalidVolume.NotFound")
    assert "vol-0123456789abcdef0" not in report.kept

    message = str(BackupError(report))
    assert "1 error(s) (2 snapshot(s) created, 2 deleted)" in message
    assert "InvalidVolume.NotFound" in message


def test_backup_error_lists_every_error() -> None:
    report = BackupReport(errors=["vol-1: CreateSnapshot failed: A", "vol-2: DeleteSnapshot x: B"])
    text = str(BackupError(report))
    assert "2 error(s)" in text and "  - vol-1: CreateSnapshot failed: A" in text
    assert "  - vol-2: DeleteSnapshot x: B" in text
