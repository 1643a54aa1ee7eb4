"""What the analytics layer needs to exist, created idempotently on whatever endpoint boto3 uses:
the processed-events topic, the Glue database and both curated tables. The analytics create them
on first use anyway; ``feedlot local up`` calls this so they are there from the start (on AWS,
``deploy/cloudformation/analytics.yaml`` creates them)."""

from __future__ import annotations

from dataclasses import dataclass

from feedlot_pipeline.analytics.catalog import ensure_catalog
from feedlot_pipeline.analytics.notices import ensure_topic
from feedlot_pipeline.analytics.targets import AnalyticsTargets


@dataclass(frozen=True)
class ProvisionedAnalytics:
    processed_events_topic_arn: str
    glue_database: str


def provision_analytics(targets: AnalyticsTargets | None = None) -> ProvisionedAnalytics:
    t = targets or AnalyticsTargets.from_settings()
    arn = ensure_topic(t)
    ensure_catalog(t, force=True)
    return ProvisionedAnalytics(arn, t.glue_database)
