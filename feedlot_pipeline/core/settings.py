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
    "FEEDLOT_INGEST_API_MAX_BODY_BYTES": "1048576",
    "FEEDLOT_FIREHOSE_STREAM": "feedlot-consumption-firehose",
    "FEEDLOT_LANDING_INPUT_PREFIX": "incoming/",
    "FEEDLOT_FILE_DROPS_TOPIC": "feedlot-file-drops",
    "FEEDLOT_FILEDROP_MAX_BYTES": "52428800",
    "FEEDLOT_FILEDROP_CHUNK_RECORDS": "5000",
    "FEEDLOT_FILEDROP_MAX_RECORD_BYTES": "1048576",
    "FEEDLOT_LARGE_FILE_QUEUE": "feedlot-large-files",
    "FEEDLOT_LARGE_FILE_DLQ": "feedlot-large-files-dlq",
    "FEEDLOT_FAILURE_TOPIC": "feedlot-failures",
    "FEEDLOT_FAILURES_INBOX": "feedlot-failures-inbox",
    "FEEDLOT_WORKER_WORKDIR": "/mnt/feedlot-data",
    "FEEDLOT_WORKER_CHUNK_RECORDS": "20000",
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
    "FEEDLOT_INGEST_API_MAX_BODY_BYTES": "largest POST /consumo body the API accepts (413 above; "
    "API Gateway itself stops at 10 MB)",
    "FEEDLOT_INGEST_API_KEY": "API key of POST /consumo (x-api-key) for the local API gateway and "
    "`feedlot produce --via api`; `feedlot local up` generates one",
    "FEEDLOT_INGEST_API_KEY_PARAMETER": "SSM parameter holding the API key (used when "
    "FEEDLOT_INGEST_API_KEY is unset)",
    "FEEDLOT_INGEST_API_URL": "base URL of the ingest API (POST <url>/consumo); set by "
    "`feedlot local up`",
    "FEEDLOT_INGEST_API_PORT": "port of the local API gateway of `feedlot local up` (9020)",
    "FEEDLOT_FIREHOSE_STREAM": "Firehose delivery stream of `feedlot produce --via firehose`",
    "FEEDLOT_LANDING_INPUT_PREFIX": "prefix of the landing bucket where dropped files are "
    "processed (ObjectCreated elsewhere is ignored); Firehose writes under <prefix>firehose/",
    "FEEDLOT_FILE_DROPS_TOPIC": "SNS topic the landing bucket's ObjectCreated events go to "
    "locally (moto cannot invoke Lambda; the Lambda bridge is subscribed at /s3)",
    "FEEDLOT_FILEDROP_MAX_BYTES": "dropped files above this size go to the EC2 worker through "
    "the large-file queue instead of the S3 Lambda; 0 = no limit",
    "FEEDLOT_FILEDROP_CHUNK_RECORDS": "records per landing chunk of a dropped file (keep it "
    "stable: chunk boundaries are part of the raw object keys)",
    "FEEDLOT_FILEDROP_MAX_RECORD_BYTES": "largest single record (line, array element, CSV row) "
    "of a dropped file; a longer one is landed as a rejected text marker",
    "FEEDLOT_LARGE_FILE_QUEUE": "SQS queue of large dropped files for the worker bulk import",
    "FEEDLOT_LARGE_FILE_DLQ": "dead-letter queue of the large-file queue",
    "FEEDLOT_FAILURE_TOPIC": "SNS topic (name or ARN) that gets a structured document for every "
    "whole event that could not be processed (source, stage, reason, payload, event id, time)",
    "FEEDLOT_FAILURES_INBOX": "SQS queue subscribed to the failure topic (raw delivery) so failure "
    "documents can be read: `feedlot dlq list --queue feedlot-failures-inbox`",
    "FEEDLOT_WORKER_WORKDIR": "work dir of worker jobs (the EC2 instance's EBS data volume): "
    "temporary files under tmp/<job-id>/, job logs under logs/<job-id>.log",
    "FEEDLOT_WORKER_CHUNK_RECORDS": "records per chunk of the worker's bulk import (keep it "
    "stable: chunk numbers are part of the raw object keys, so a re-import maps to the same keys)",
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
