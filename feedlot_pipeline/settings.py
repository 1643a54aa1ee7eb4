"""Configuration from environment variables, with the defaults the local stack provisions.

Every name is read at call time (not import time) so tests and the CLI can point the same process
at different stacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

DEFAULTS: dict[str, str] = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "FEEDLOT_LANDING_BUCKET": "feedlot-landing",
    "FEEDLOT_LAKE_BUCKET": "feedlot-lake",
    "FEEDLOT_PROCESSED_BUCKET": "feedlot-processed",
    "FEEDLOT_RECORDS_TOPIC": "feedlot-consumption-records",
    "FEEDLOT_SENSOR_QUEUE": "feedlot-sensor-queue",
    "FEEDLOT_SENSOR_DLQ": "feedlot-sensor-dlq",
    "FEEDLOT_SENSOR_INTERVAL_SECONDS": "3",
    "FEEDLOT_SENSOR_MAX_NOTICES": "200",
    "FEEDLOT_CONSUMO_META_RULE": "peso_medio_pct_1_76",
    "FEEDLOT_PARTITION_START": "2020-01-01",
}

DOCS: dict[str, str] = {
    "AWS_ENDPOINT_URL": "endpoint of every boto3 client (the local moto server); unset for AWS",
    "AWS_DEFAULT_REGION": "AWS region",
    "FEEDLOT_WAREHOUSE_URL": "SQLAlchemy URL of the warehouse, driver named "
    "(postgresql+psycopg://… or mysql+pymysql://…)",
    "FEEDLOT_DAGSTER_STORAGE_URL": "PostgreSQL URL of Dagster's instance storage (dagster.yaml)",
    "FEEDLOT_LANDING_BUCKET": "bucket where files are dropped",
    "FEEDLOT_LAKE_BUCKET": "data lake bucket (raw zone historico_diario/…)",
    "FEEDLOT_PROCESSED_BUCKET": "bucket for processed outputs",
    "FEEDLOT_RECORDS_TOPIC": "SNS topic that farms publish consumption records to",
    "FEEDLOT_SENSOR_QUEUE": "SQS queue the landing Lambdas notify and the sensor drains",
    "FEEDLOT_SENSOR_DLQ": "dead-letter queue of the sensor queue",
    "FEEDLOT_SENSOR_INTERVAL_SECONDS": "sensor tick interval",
    "FEEDLOT_SENSOR_MAX_NOTICES": "most notices the sensor drains in one tick",
    "FEEDLOT_CONSUMO_META_RULE": "name of the consumo_meta rule",
    "FEEDLOT_PARTITION_START": "first day of the daily partitions",
}


def env(name: str) -> str:
    """Value of a setting: the environment first, then the documented default."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    if name in DEFAULTS:
        return DEFAULTS[name]
    raise KeyError(f"{name} is not set ({DOCS.get(name, 'no default')})")


@dataclass(frozen=True)
class Settings:
    """A snapshot of the settings, read once where a component is built."""

    region: str = field(default_factory=lambda: env("AWS_DEFAULT_REGION"))
    landing_bucket: str = field(default_factory=lambda: env("FEEDLOT_LANDING_BUCKET"))
    lake_bucket: str = field(default_factory=lambda: env("FEEDLOT_LAKE_BUCKET"))
    processed_bucket: str = field(default_factory=lambda: env("FEEDLOT_PROCESSED_BUCKET"))
    records_topic: str = field(default_factory=lambda: env("FEEDLOT_RECORDS_TOPIC"))
    sensor_queue: str = field(default_factory=lambda: env("FEEDLOT_SENSOR_QUEUE"))
    sensor_dlq: str = field(default_factory=lambda: env("FEEDLOT_SENSOR_DLQ"))
    sensor_interval_seconds: int = field(
        default_factory=lambda: int(env("FEEDLOT_SENSOR_INTERVAL_SECONDS"))
    )
    sensor_max_notices: int = field(default_factory=lambda: int(env("FEEDLOT_SENSOR_MAX_NOTICES")))
    consumo_meta_rule: str = field(default_factory=lambda: env("FEEDLOT_CONSUMO_META_RULE"))
    partition_start: date = field(
        default_factory=lambda: date.fromisoformat(env("FEEDLOT_PARTITION_START"))
    )

    @property
    def warehouse_url(self) -> str:
        return env("FEEDLOT_WAREHOUSE_URL")
