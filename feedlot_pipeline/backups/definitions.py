"""EBS backups' definitions: snapshots of the tagged volumes and their retention, daily."""

import dagster as dg

from feedlot_pipeline.backups.assets import ebs_snapshots
from feedlot_pipeline.backups.jobs import ebs_backup_job
from feedlot_pipeline.backups.schedules import build_ebs_backup_schedule


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[ebs_snapshots], jobs=[ebs_backup_job], schedules=[build_ebs_backup_schedule()]
    )
