"""ebs_backup_job: materializes ebs_snapshots (snapshot the tagged volumes, prune)."""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.backups.assets import ebs_snapshots

# One step: in-process spares the subprocess start of the multiprocess executor.
ebs_backup_job = dg.define_asset_job(
    name="ebs_backup_job",
    selection=dg.AssetSelection.assets(ebs_snapshots),
    executor_def=dg.in_process_executor,
    description="Snapshot every EBS volume tagged for backup and prune this platform's snapshots.",
)
