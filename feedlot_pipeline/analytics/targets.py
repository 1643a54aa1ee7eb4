"""Where the analytics layer writes: the processed bucket's prefixes, the Glue database and the
processed-events topic, and one S3 writer whose errors say what failed and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import AnalyticsSettings, Settings


class AnalyticsOutputError(RuntimeError):
    """The processed bucket, Glue or the events topic could not be written.

    Raised before the partition's warehouse transaction commits, so consumo_diario keeps its
    previous rows; a rerun of the partition writes everything again (idempotent).
    """


@dataclass(frozen=True)
class AnalyticsTargets:
    bucket: str
    glue_database: str
    events_topic: str
    curated_prefix: str = "curated/"
    describe_prefix: str = "describe/"
    reports_prefix: str = "reports/"

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, analytics: AnalyticsSettings | None = None
    ) -> AnalyticsTargets:
        s = settings or Settings()
        a = analytics or AnalyticsSettings()
        return cls(
            bucket=s.processed_bucket,
            glue_database=a.glue_database,
            events_topic=a.processed_events_topic,
            curated_prefix=a.curated_prefix,
            describe_prefix=a.describe_prefix,
            reports_prefix=a.reports_prefix,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def describe_key(self, fazenda: str, dia: date) -> str:
        return f"{self.describe_prefix}historico_consumo/{fazenda}/{dia:%Y/%m/%d}/describe.csv"

    def monthly_describe_key(self, fazenda: str, month: date) -> str:
        return f"{self.describe_prefix}historico_consumo/{fazenda}/{month:%Y/%m}/describe.csv"

    def report_key(self, fazenda: str, dia: date) -> str:
        return f"{self.reports_prefix}{fazenda}/{dia:%Y/%m/%d}/relatorio.html"

    def monthly_report_key(self, fazenda: str, month: date) -> str:
        return f"{self.reports_prefix}{fazenda}/{month:%Y/%m}/relatorio.html"


def put_object(targets: AnalyticsTargets, key: str, body: bytes, content_type: str) -> str:
    """Write one object of the processed bucket; its s3:// URI. AnalyticsOutputError on failure."""
    try:
        client("s3").put_object(Bucket=targets.bucket, Key=key, Body=body, ContentType=content_type)
    except Exception as err:  # noqa: BLE001 - botocore errors of every kind, re-raised explained
        raise AnalyticsOutputError(
            f"cannot write {targets.uri(key)} (processed bucket, FEEDLOT_PROCESSED_BUCKET): "
            f"{type(err).__name__}: {err}. consumo_diario was left as it was; rerun the "
            "partition once the bucket is reachable."
        ) from err
    return targets.uri(key)


def presigned_url(targets: AnalyticsTargets, key: str, seconds: int = 7 * 24 * 3600) -> str | None:
    """A link that opens the object in a browser (the moto endpoint locally); None if unsigned."""
    try:
        return client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": targets.bucket, "Key": key}, ExpiresIn=seconds
        )
    except Exception:  # noqa: BLE001 - a link is a convenience
        return None
