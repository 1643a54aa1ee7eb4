"""Where the analytics write, as the Dagster resource ``analytics`` (built from the settings)."""

import dagster as dg

from feedlot_pipeline.analytics.targets import AnalyticsTargets


class AnalyticsResource(dg.ConfigurableResource):
    """Where the analytics write: processed bucket (prefixes), Glue database, events topic."""

    bucket: str
    glue_database: str
    events_topic: str
    curated_prefix: str = "curated/"
    describe_prefix: str = "describe/"
    reports_prefix: str = "reports/"

    @classmethod
    def from_settings(cls) -> "AnalyticsResource":
        t = AnalyticsTargets.from_settings()
        return cls(
            bucket=t.bucket,
            glue_database=t.glue_database,
            events_topic=t.events_topic,
            curated_prefix=t.curated_prefix,
            describe_prefix=t.describe_prefix,
            reports_prefix=t.reports_prefix,
        )

    def targets(self) -> AnalyticsTargets:
        return AnalyticsTargets(
            bucket=self.bucket,
            glue_database=self.glue_database,
            events_topic=self.events_topic,
            curated_prefix=self.curated_prefix,
            describe_prefix=self.describe_prefix,
            reports_prefix=self.reports_prefix,
        )
