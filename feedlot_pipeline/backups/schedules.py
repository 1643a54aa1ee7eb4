"""The daily backup schedule; its cron comes from FEEDLOT_BACKUP_CRON, always in UTC."""

from __future__ import annotations

from typing import Any

import dagster as dg

from feedlot_pipeline.backups.jobs import ebs_backup_job
from feedlot_pipeline.core.settings import BackupSettings


def build_ebs_backup_schedule(job: Any = ebs_backup_job) -> dg.ScheduleDefinition:
    """Read the cron when the code location loads (like the sensor reads its interval).

    Runs by default: backups that wait for someone to switch them on are not backups.
    """
    cron = BackupSettings().backup_cron
    return dg.ScheduleDefinition(
        name="ebs_backup_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"EBS snapshots and retention, cron '{cron}' UTC (FEEDLOT_BACKUP_CRON).",
    )
