"""EBS backups: snapshot every volume carrying the backup tag, prune this platform's old snapshots.

Plain functions over a boto3 EC2 client, so the Dagster asset, the tests and an operator's shell
all run the same code against moto or AWS (``AWS_ENDPOINT_URL`` alone decides).

Ownership: a snapshot is this platform's only if it carries ``feedlot:managed-by`` =
``feedlot-ebs-backup`` (written at creation through ``TagSpecifications``, so there is never an
untagged moment) and belongs to this account. Pruning looks at nothing else: snapshots taken by
hand, by AWS Backup, by the DLM policy in ``deploy/cloudformation/backups.yaml`` (tagged
``feedlot:managed-by=feedlot-dlm``) or shared from other accounts are never deleted. The IAM
policy in that template enforces the same rule on AWS.

Age is the snapshot's own ``StartTime`` (when its point-in-time copy was taken), not a tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import BackupSettings

MANAGED_BY_KEY = "feedlot:managed-by"
MANAGED_BY_VALUE = "feedlot-ebs-backup"
SOURCE_VOLUME_KEY = "feedlot:source-volume"
RUN_ID_KEY = "feedlot:dagster-run-id"
NAME_KEY = "Name"
# Every tag key CreateSnapshot may write; backups.yaml allows exactly these (aws:TagKeys).
SNAPSHOT_TAG_KEYS = (MANAGED_BY_KEY, SOURCE_VOLUME_KEY, RUN_ID_KEY, NAME_KEY)

_DEFAULTS = BackupSettings.model_construct()


@dataclass(frozen=True)
class BackupPolicy:
    """Which volumes to back up and how many / how old snapshots to keep."""

    tag_key: str = _DEFAULTS.backup_tag_key
    tag_value: str = _DEFAULTS.backup_tag_value
    keep: int = _DEFAULTS.backup_keep
    max_age_days: int = _DEFAULTS.backup_max_age_days

    def __post_init__(self) -> None:
        # Refuse settings that would make a run delete more than intended.
        if not self.tag_key or self.tag_key.startswith("aws:"):
            raise ValueError(f"backup tag key {self.tag_key!r} must be non-empty, not aws:…")
        if self.keep < 1:
            raise ValueError(f"FEEDLOT_BACKUP_KEEP must be at least 1, got {self.keep}")
        if self.max_age_days < 1:
            raise ValueError(
                f"FEEDLOT_BACKUP_MAX_AGE_DAYS must be at least 1, got {self.max_age_days}"
            )

    @classmethod
    def from_env(cls) -> BackupPolicy:
        """FEEDLOT_BACKUP_* (core.settings.BackupSettings), checked by ``__post_init__``."""
        s = BackupSettings()
        return cls(
            tag_key=s.backup_tag_key,
            tag_value=s.backup_tag_value,
            keep=s.backup_keep,
            max_age_days=s.backup_max_age_days,
        )

    @property
    def max_age(self) -> timedelta:
        return timedelta(days=self.max_age_days)


@dataclass(frozen=True)
class Created:
    volume: str
    snapshot: str
    volume_name: str | None = None


@dataclass(frozen=True)
class Deleted:
    snapshot: str
    volume: str
    reason: str
    started: datetime


@dataclass
class BackupReport:
    """What one run did; ``errors`` non-empty means the run must fail after the rest was done."""

    volumes: list[str] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)
    deleted: list[Deleted] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class BackupError(RuntimeError):
    """Some volumes failed; the report still lists everything that was created and deleted."""

    def __init__(self, report: BackupReport) -> None:
        self.report = report
        lines = "\n".join(f"  - {e}" for e in report.errors)
        super().__init__(
            f"EBS backup finished with {len(report.errors)} error(s) "
            f"({len(report.created)} snapshot(s) created, {len(report.deleted)} deleted):\n{lines}"
        )


def _tags(resource: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', str(exc))}"
    return f"{type(exc).__name__}: {exc}"


def find_volumes(ec2: Any, settings: BackupPolicy) -> list[dict[str, Any]]:
    """Every volume tagged ``tag_key=tag_value`` (all pages), in a stable order."""
    volumes: list[dict[str, Any]] = []
    pages = ec2.get_paginator("describe_volumes").paginate(
        Filters=[{"Name": f"tag:{settings.tag_key}", "Values": [settings.tag_value]}]
    )
    for page in pages:
        volumes.extend(page.get("Volumes", []))
    return sorted(volumes, key=lambda v: v["VolumeId"])


def snapshot_tags(volume: Mapping[str, Any], run_id: str | None = None) -> list[dict[str, str]]:
    """The tags a new snapshot is created with: ours, its source, the volume's Name."""
    tags = {MANAGED_BY_KEY: MANAGED_BY_VALUE, SOURCE_VOLUME_KEY: volume["VolumeId"]}
    if run_id:
        tags[RUN_ID_KEY] = run_id
    name = _tags(volume).get(NAME_KEY)
    if name:
        tags[NAME_KEY] = name
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def create_snapshot(ec2: Any, volume: Mapping[str, Any], run_id: str | None = None) -> Created:
    """Start one snapshot, tagged in the same call (no window where it exists untagged)."""
    volume_id = volume["VolumeId"]
    name = _tags(volume).get(NAME_KEY)
    description = f"feedlot EBS backup of {volume_id}" + (f" ({name})" if name else "")
    response = ec2.create_snapshot(
        VolumeId=volume_id,
        Description=description[:255],
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": snapshot_tags(volume, run_id)}],
    )
    return Created(volume=volume_id, snapshot=response["SnapshotId"], volume_name=name)


def managed_snapshots(ec2: Any) -> dict[str, list[dict[str, Any]]]:
    """This account's snapshots carrying our managed-by tag, grouped by source volume.

    The tag is checked again on each result, so a filter the endpoint ignored could never widen
    what pruning sees.
    """
    by_volume: dict[str, list[dict[str, Any]]] = {}
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"],
        Filters=[{"Name": f"tag:{MANAGED_BY_KEY}", "Values": [MANAGED_BY_VALUE]}],
    )
    for page in pages:
        for snap in page.get("Snapshots", []):
            if _tags(snap).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE:
                by_volume.setdefault(snap["VolumeId"], []).append(snap)
    return by_volume


def plan_prune(
    snapshots: Iterable[Mapping[str, Any]], settings: BackupPolicy, now: datetime
) -> tuple[list[tuple[Mapping[str, Any], str]], int]:
    """Which of one volume's managed snapshots to delete (with the reason), and how many stay.

    Completed snapshots, newest first: the first ``keep`` stay unless older than ``max_age``;
    the rest go. Snapshots in any other state (pending, error) neither count towards ``keep`` nor
    go, until they are older than ``max_age`` — a stuck or failed copy is not a backup, but a
    pending one may be today's.

    The newest completed snapshot always stays, however old. If snapshots stop being created
    (the volume detached, CreateSnapshot denied, the schedule off), age pruning would otherwise
    delete a volume's last restore point a month later, without anyone having decided to; an
    old backup is worth more than none. A volume whose newest snapshot is old needs a person.
    """
    completed: list[Mapping[str, Any]] = []
    other: list[Mapping[str, Any]] = []
    for snap in snapshots:
        (completed if snap.get("State") == "completed" else other).append(snap)
    completed.sort(key=lambda s: (s["StartTime"], s["SnapshotId"]), reverse=True)

    doomed: list[tuple[Mapping[str, Any], str]] = []
    for rank, snap in enumerate(completed):
        age = now - snap["StartTime"]
        if rank == 0:
            continue  # the newest restore point: see the docstring
        if rank >= settings.keep:
            doomed.append((snap, f"beyond the newest {settings.keep} (#{rank + 1})"))
        elif age > settings.max_age:
            doomed.append((snap, f"older than {settings.max_age_days} days"))
    for snap in other:
        if now - snap["StartTime"] > settings.max_age:
            doomed.append(
                (snap, f"{snap.get('State', 'unknown')} for over {settings.max_age_days} days")
            )
    kept = len(completed) + len(other) - len(doomed)
    return doomed, kept


def backup_volumes(
    ec2: Any,
    settings: BackupPolicy,
    volumes: Iterable[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> BackupReport:
    """Snapshot each volume, then prune each volume that was snapshotted; collect every error.

    One volume's failure does not stop the others. A volume whose snapshot failed is not pruned
    in this run: its backups are not thinned on a day it got no new one.
    """
    report = BackupReport()
    backed_up: list[str] = []
    for volume in volumes:
        volume_id = volume["VolumeId"]
        report.volumes.append(volume_id)
        try:
            report.created.append(create_snapshot(ec2, volume, run_id))
            backed_up.append(volume_id)
        except (ClientError, BotoCoreError) as exc:
            report.errors.append(f"{volume_id}: CreateSnapshot failed: {_describe_error(exc)}")
    if not backed_up:
        return report

    try:
        managed = managed_snapshots(ec2)
    except (ClientError, BotoCoreError) as exc:
        report.errors.append(f"DescribeSnapshots failed, nothing pruned: {_describe_error(exc)}")
        return report

    now = now or datetime.now(timezone.utc)
    for volume_id in backed_up:
        doomed, kept = plan_prune(managed.get(volume_id, []), settings, now)
        for snap, reason in doomed:
            try:
                ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
            except (ClientError, BotoCoreError) as exc:
                kept += 1
                report.errors.append(
                    f"{volume_id}: DeleteSnapshot {snap['SnapshotId']} failed: "
                    f"{_describe_error(exc)}"
                )
                continue
            report.deleted.append(
                Deleted(snap["SnapshotId"], volume_id, reason, started=snap["StartTime"])
            )
        report.kept[volume_id] = kept
    return report


def run_backup(
    settings: BackupPolicy | None = None,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
    ec2: Any | None = None,
) -> BackupReport:
    """The whole job: find the tagged volumes, snapshot and prune them.

    Raises ``BackupError`` (carrying the full report) if anything failed, after doing the rest.
    """
    settings = settings or BackupPolicy.from_env()
    ec2 = ec2 or client("ec2")
    volumes = find_volumes(ec2, settings)
    report = backup_volumes(ec2, settings, volumes, run_id=run_id, now=now)
    if report.errors:
        raise BackupError(report)
    return report
