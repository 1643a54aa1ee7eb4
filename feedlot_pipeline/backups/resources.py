"""The backup settings as a Dagster resource, so a run's settings show in the launchpad."""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.backups.snapshots import BackupPolicy, BackupReport, run_backup


class EbsBackupResource(dg.ConfigurableResource):
    """Which EBS volumes to snapshot (by tag) and the retention of this platform's snapshots."""

    tag_key: str = BackupPolicy.tag_key
    tag_value: str = BackupPolicy.tag_value
    keep: int = BackupPolicy.keep
    max_age_days: int = BackupPolicy.max_age_days

    @classmethod
    def from_env(cls) -> EbsBackupResource:
        """FEEDLOT_BACKUP_* from the environment, defaults where unset (validated here)."""
        s = BackupPolicy.from_env()
        return cls(
            tag_key=s.tag_key, tag_value=s.tag_value, keep=s.keep, max_age_days=s.max_age_days
        )

    def settings(self) -> BackupPolicy:
        return BackupPolicy(
            tag_key=self.tag_key,
            tag_value=self.tag_value,
            keep=self.keep,
            max_age_days=self.max_age_days,
        )

    def run(self, run_id: str | None = None) -> BackupReport:
        """Snapshot and prune; raises BackupError (with the report) if anything failed."""
        return run_backup(self.settings(), run_id=run_id)
