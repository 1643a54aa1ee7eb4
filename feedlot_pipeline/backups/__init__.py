"""EBS backups: a scheduled Dagster job that snapshots tagged volumes and prunes its snapshots."""
