# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""ebs_snapshots: this platform's EBS snapshots, refreshed and pruned by each run.

An asset rather than an op: the snapshot set is a persistent thing the platform keeps (restore
points), and each materialization records what that run created and deleted, so the asset
catalog holds the backup history next to the data it protects.
"""

import dagster as dg

from feedlot_pipeline.backups.resources import EbsBackupResource
from feedlot_pipeline.backups.snapshots import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    BackupError,
    BackupPolicy,
    BackupReport,
)

CREATED_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("volume", "string"),
        dg.TableColumn("volume_name", "string"),
        dg.TableColumn("snapshot", "string"),
    ]
)
DELETED_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("snapshot", "string"),
        dg.TableColumn("volume", "string"),
        dg.TableColumn("started", "string"),
        dg.TableColumn("reason", "string"),
    ]
)


def report_metadata(report: BackupReport, settings: BackupPolicy) -> dict[str, dg.MetadataValue]:
    """Counts, the created and deleted snapshots as tables, and the settings the run used."""
    created = [
        dg.TableRecord(
            {"volume": c.volume, "volume_name": c.volume_name or "", "snapshot": c.snapshot}
        )
        for c in report.created
    ]
    deleted = [
        dg.TableRecord(
            {
                "snapshot": d.snapshot,
                "volume": d.volume,
                "started": d.started.isoformat(),
                "reason": d.reason,
            }
        )
        for d in report.deleted
    ]
    metadata: dict[str, dg.MetadataValue] = {
        "volumes": dg.MetadataValue.int(len(report.volumes)),
        "created_count": dg.MetadataValue.int(len(report.created)),
        "deleted_count": dg.MetadataValue.int(len(report.deleted)),
        "created": dg.MetadataValue.table(created, schema=CREATED_SCHEMA),
        "deleted": dg.MetadataValue.table(deleted, schema=DELETED_SCHEMA),
        "kept_per_volume": dg.MetadataValue.json(dict(report.kept)),
        "selection": dg.MetadataValue.text(f"{settings.tag_key}={settings.tag_value}"),
        "retention": dg.MetadataValue.text(
            f"newest {settings.keep}, none older than {settings.max_age_days} days "
            "(the newest always kept)"
        ),
    }
    if report.errors:
        metadata["errors"] = dg.MetadataValue.json(list(report.errors))
    return metadata


@dg.asset(
    name="ebs_snapshots",
    group_name="backups",
    kinds={"ec2"},
    description=(
        "EBS snapshots of every volume tagged with the backup tag (FEEDLOT_BACKUP_TAG_KEY/VALUE, "
        f"default Backup=true), tagged {MANAGED_BY_KEY}={MANAGED_BY_VALUE}. Each run takes one "
        "snapshot per volume and prunes only snapshots carrying that tag: the newest "
        "FEEDLOT_BACKUP_KEEP (7) per volume stay, none older than FEEDLOT_BACKUP_MAX_AGE_DAYS "
        "(30), the newest always."
    ),
)
def ebs_snapshots(
    context: dg.AssetExecutionContext, ebs_backup: EbsBackupResource
) -> dg.MaterializeResult:
    settings = ebs_backup.settings()
    failure: BackupError | None = None
    try:
        report = ebs_backup.run(run_id=context.run_id)
    except BackupError as exc:
        failure, report = exc, exc.report
    for c in report.created:
        context.log.info(f"created {c.snapshot} of {c.volume} ({c.volume_name or 'no Name'})")
    for d in report.deleted:
        context.log.info(f"deleted {d.snapshot} of {d.volume}: {d.reason}")
    if not report.volumes:
        context.log.warning(
            f"no EBS volume is tagged {settings.tag_key}={settings.tag_value}: nothing backed up"
        )
    metadata = report_metadata(report, settings)
    if failure is not None:
        # Fail the run, keeping the record of what did happen on the failure event.
        raise dg.Failure(description=str(failure), metadata=metadata) from failure
    return dg.MaterializeResult(metadata=metadata)
