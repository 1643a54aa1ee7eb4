"""Every setting of the platform, typed, with its default and its meaning: the one reader of the
environment.

Each class groups the settings of one part (the core data flow, the EC2 worker, EBS backups, the
public-API source, the local stack). A class reads the environment when it is built, so tests and
the CLI can point the same process at another stack by changing variables; build it where a
component is built, never per record. An empty variable counts as unset.

``DEFAULTS`` and ``DOCS`` (variable → default / meaning) are derived from the fields: the deploy
templates' parameter defaults and the README's configuration table are checked against them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

WORKER_DOCUMENT = "AWS-RunShellScript"


class SettingsError(ValueError):
    """A variable holds a value its setting cannot take; the message names the variable."""


class _FromEnv(BaseSettings):
    """FEEDLOT_* variables (a field's ``validation_alias`` names any other variable)."""

    model_config = SettingsConfigDict(
        env_prefix="FEEDLOT_",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError(_explain(type(self), err)) from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of one field."""
        alias = cls.model_fields[field].validation_alias
        prefix = cls.model_config.get("env_prefix", "")
        return alias if isinstance(alias, str) else f"{prefix}{field}".upper()

    @classmethod
    def variables(cls) -> dict[str, tuple[str, str]]:
        """Environment variable → (default as text, meaning) for every field."""
        out: dict[str, tuple[str, str]] = {}
        for name, field in cls.model_fields.items():
            variable = cls.variable(name)
            default = field.get_default(call_default_factory=False)
            if isinstance(default, SecretStr):
                default = default.get_secret_value()
            text = "" if default is None else str(default)
            if isinstance(default, bool):
                text = text.lower()
            out[variable] = (text, field.description or "")
        return out


def _explain(cls: type[_FromEnv], err: ValidationError) -> str:
    parts = []
    for problem in err.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        name = cls.variable(field) if field in cls.model_fields else field
        shown = problem.get("input")
        shown = "<secret>" if "secret" in field or "key" in field or "url" in field else shown
        parts.append(f"{name}={shown!r} is invalid: {problem['msg']}")
    return "; ".join(parts)


class Settings(_FromEnv):
    """The core data flow: buckets, topics, queues, the sensor, the rules, the warehouse."""

    region: str = Field(
        "us-east-1", validation_alias="AWS_DEFAULT_REGION", description="AWS region"
    )
    aws_endpoint_url: str | None = Field(
        None,
        validation_alias="AWS_ENDPOINT_URL",
        description="endpoint of every boto3 client (the local moto server); unset for AWS",
    )
    landing_bucket: str = Field("feedlot-landing", description="bucket where files are dropped")
    lake_bucket: str = Field(
        "feedlot-lake", description="data lake bucket (raw zone historico_diario/…)"
    )
    processed_bucket: str = Field("feedlot-processed", description="bucket for processed outputs")
    records_topic: str = Field(
        "feedlot-consumption-records",
        description="SNS topic that farms publish consumption records to",
    )
    sensor_queue: str = Field(
        "feedlot-sensor-queue",
        description="SQS queue the landing Lambdas notify and the sensor drains",
    )
    sensor_dlq: str = Field(
        "feedlot-sensor-dlq", description="dead-letter queue of the sensor queue"
    )
    sensor_interval_seconds: int = Field(3, ge=1, description="sensor tick interval")
    sensor_max_notices: int = Field(
        5000,
        ge=1,
        description="most notices the sensor drains in one tick (a tick stops early after 20 s "
        "whatever the count)",
    )
    sweep_interval_seconds: int = Field(
        300,
        ge=10,
        description="how often lake_sweep_sensor lists the recent raw partitions for objects "
        "the load ledger does not have (a notice lost with a queue, a run that gave up)",
    )
    sweep_lookback_days: int = Field(
        2, ge=0, description="days before today that lake_sweep_sensor lists (plus tomorrow)"
    )
    sweep_budget_seconds: float = Field(
        20.0,
        gt=0,
        description="listing time of one lake_sweep_sensor tick; a pass over more farms than "
        "that lists goes on at the next tick (30 s later), far below Dagster's 60 s deadline",
    )
    sweep_min_age_seconds: int = Field(
        120,
        ge=0,
        description="objects younger than this are left to their notices (still in flight)",
    )
    load_retries: int = Field(
        5,
        ge=0,
        description="times a load step is retried after a transient failure (the warehouse or "
        "the lake unreachable: a restart, a failover); other errors fail at once",
    )
    load_retry_delay_seconds: float = Field(
        5.0,
        ge=0,
        description="wait before the first retry of a load step; doubled at each retry, with "
        "±25 percent jitter (5 retries from 5 s span about 2.5 minutes)",
    )
    consumo_meta_rule: str = Field(
        "peso_medio_pct_1_76", description="name of the consumo_meta rule"
    )
    partition_start: date = Field(date(2020, 1, 1), description="first day of the daily partitions")
    warehouse_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the warehouse, driver named "
        "(postgresql+psycopg://… or mysql+pymysql://…)",
    )
    warehouse_secret: str | None = Field(
        None,
        description="where FEEDLOT_WAREHOUSE_URL is unset (the EC2 worker): a Secrets Manager "
        "secret holding the warehouse URL, as text or JSON under FEEDLOT_WAREHOUSE_SECRET_KEY",
    )
    warehouse_secret_key: str = Field(
        "url", description="JSON key of the URL inside FEEDLOT_WAREHOUSE_SECRET"
    )
    dagster_storage_url: SecretStr | None = Field(
        None, description="PostgreSQL URL of Dagster's instance storage (dagster.yaml)"
    )
    ingest_api_max_body_bytes: int = Field(
        1_048_576,
        ge=1,
        description="largest POST /consumo body the API accepts (413 above; API Gateway itself "
        "stops at 10 MB)",
    )
    ingest_api_max_records: int = Field(
        5_000,
        ge=1,
        description="most records in one POST /consumo (413 above): bounds the memory and time "
        "of one request whatever the body holds (a 1 MiB body of `{}`s is 350,000 records)",
    )
    ingest_api_key: SecretStr | None = Field(
        None,
        description="API key of POST /consumo (x-api-key) for the local API gateway and "
        "`feedlot produce --via api`; `feedlot local up` generates one",
    )
    ingest_api_key_parameter: str | None = Field(
        None,
        description="SSM parameter holding the API key (used when FEEDLOT_INGEST_API_KEY is unset)",
    )
    ingest_api_url: str | None = Field(
        None,
        description="base URL of the ingest API (POST <url>/consumo); set by `feedlot local up`",
    )
    firehose_stream: str = Field(
        "feedlot-consumption-firehose",
        description="Firehose delivery stream of `feedlot produce --via firehose`",
    )
    landing_input_prefix: str = Field(
        "incoming/",
        description="prefix of the landing bucket where dropped files are processed "
        "(ObjectCreated elsewhere is ignored); Firehose writes under <prefix>firehose/",
    )
    file_drops_topic: str = Field(
        "feedlot-file-drops",
        description="SNS topic the landing bucket's ObjectCreated events go to locally (moto "
        "cannot invoke Lambda; the Lambda bridge is subscribed at /s3)",
    )
    filedrop_max_bytes: int = Field(
        52_428_800,
        ge=0,
        description="dropped files above this size go to the EC2 worker through the large-file "
        "queue instead of the S3 Lambda; 0 = no limit",
    )
    filedrop_chunk_records: int = Field(
        5000,
        ge=1,
        description="records per landing chunk of a dropped file (keep it stable: chunk "
        "boundaries are part of the raw object keys)",
    )
    filedrop_max_record_bytes: int = Field(
        1_048_576,
        ge=1,
        description="largest single record (line, array element, CSV row) of a dropped file; a "
        "longer one is landed as a rejected text marker",
    )
    large_file_queue: str = Field(
        "feedlot-large-files",
        description="SQS queue of large dropped files for the worker bulk import",
    )
    large_file_dlq: str = Field(
        "feedlot-large-files-dlq", description="dead-letter queue of the large-file queue"
    )
    failure_topic: str = Field(
        "feedlot-failures",
        description="SNS topic (name or ARN) that gets a structured document for every whole "
        "event that could not be processed (source, stage, reason, payload, event id, time)",
    )
    failures_inbox: str = Field(
        "feedlot-failures-inbox",
        description="SQS queue subscribed to the failure topic (raw delivery) so failure "
        "documents can be read: `feedlot dlq list --queue feedlot-failures-inbox`",
    )

    def warehouse_url_value(self) -> str | None:
        """FEEDLOT_WAREHOUSE_URL as text, or None when unset."""
        return None if self.warehouse_url is None else self.warehouse_url.get_secret_value()

    def valid_days(self, today: date) -> tuple[date, date]:
        """Days the Dagster partitions cover: from the configured start through tomorrow."""
        from datetime import timedelta

        return self.partition_start, today + timedelta(days=1)


class WorkerSettings(_FromEnv):
    """The EC2 worker: where its jobs run (SSM target), how long, and its work dir."""

    worker_workdir: Path = Field(
        Path("/mnt/feedlot-data"),
        description="work dir of worker jobs (the EC2 instance's EBS data volume): temporary "
        "files under tmp/<job-id>/, job logs under logs/<job-id>.log",
    )
    worker_chunk_records: int = Field(
        20_000,
        ge=1,
        description="records per chunk of the worker's bulk import (keep it stable: chunk "
        "numbers are part of the raw object keys, so a re-import maps to the same keys)",
    )
    pipes_bucket: str | None = Field(
        None,
        description="bucket of the Dagster Pipes context and messages "
        "(default: FEEDLOT_PROCESSED_BUCKET)",
    )
    pipes_prefix: str = Field(
        "pipes/", description="key prefix of every Pipes object (IAM grants only this prefix)"
    )
    worker_tag_key: str = Field(
        "Role", description="tag key selecting the EC2 worker instance for SSM commands"
    )
    worker_tag_value: str = Field("feedlot-worker", description="value of that tag")
    worker_instance_id: str | None = Field(
        None, description="send to this instance id instead of by tag"
    )
    worker_document: str = Field(
        WORKER_DOCUMENT, description="SSM document run on the worker (needs a commands parameter)"
    )
    worker_timeout_seconds: float = Field(
        21_600, gt=0, description="longest a dispatched worker job may run before it is cancelled"
    )
    worker_poll_seconds: float = Field(
        5, gt=0, description="how often SSM status and Pipes messages are polled"
    )
    worker_command: str = Field(
        "feedlot", description="the feedlot console script as the worker's shell finds it"
    )
    worker_output_prefix: str = Field(
        "worker-output/",
        description="default output prefix of worker jobs in the processed bucket",
    )

    # Settings the worker must agree with Dagster on, sent with each command. Names, buckets and
    # a secret's name only: the command line is visible in SSM's history, so never a URL or key.
    FORWARDED: ClassVar[tuple[str, ...]] = (
        "AWS_DEFAULT_REGION",
        "FEEDLOT_LANDING_BUCKET",
        "FEEDLOT_LAKE_BUCKET",
        "FEEDLOT_PROCESSED_BUCKET",
        "FEEDLOT_CONSUMO_META_RULE",
        "FEEDLOT_PARTITION_START",
        "FEEDLOT_WAREHOUSE_SECRET",
        "FEEDLOT_WAREHOUSE_SECRET_KEY",
        "FEEDLOT_METRICS_NAMESPACE",
        "FEEDLOT_METRICS_ENABLED",
    )

    def pipes_bucket_or(self, processed_bucket: str) -> str:
        return self.pipes_bucket or processed_bucket


class BackupSettings(_FromEnv):
    """EBS backups: which volumes (by tag), how many snapshots to keep, when."""

    backup_tag_key: str = Field(
        "Backup", description="tag key selecting the EBS volumes to snapshot"
    )
    backup_tag_value: str = Field("true", description="value of that tag")
    backup_keep: int = Field(7, description="newest completed snapshots kept per volume")
    backup_max_age_days: int = Field(
        30, description="snapshots older than this are deleted (the newest never)"
    )
    backup_cron: str = Field("0 3 * * *", description="cron of ebs_backup_schedule (UTC)")


class PublicApiSettings(_FromEnv):
    """The public JSON API source (``api_snapshot``)."""

    api_name: str = Field(
        "public_api", description="snapshot name: api_snapshots/<name>/… (A-Z a-z 0-9 _ -)"
    )
    api_url: str | None = Field(
        None, description="URL of the JSON API (required when the snapshot runs)"
    )
    api_headers: str = Field(
        "{}", description="extra request headers as a JSON object (no secrets here)"
    )
    api_auth_header: str | None = Field(
        None, description="header that carries the credential, e.g. Authorization"
    )
    api_auth_prefix: str = Field("", description="text before the credential, e.g. 'Bearer '")
    api_auth_value: SecretStr | None = Field(
        None, description="the credential itself (bound with dg.EnvVar)"
    )
    api_auth_ssm_parameter: str | None = Field(
        None, description="SSM SecureString holding the credential instead"
    )
    api_pagination: str = Field("none", description="none | page | next_link")
    api_page_param: str = Field("page", description="query parameter of the page number")
    api_next_path: str = Field("next", description="dotted JSON path of the next-page link")
    api_records_path: str = Field(
        "", description="dotted JSON path of the records list ('' = the body)"
    )
    api_timeout_seconds: float = Field(30, description="time budget of one request")
    api_max_retries: int = Field(4, description="retries after the first attempt of each request")
    api_backoff_seconds: float = Field(1, description="base of the exponential backoff")
    api_max_pages: int = Field(1000, description="safety bound on pages per pull")
    api_cron: str = Field("0 6 * * *", description="cron (UTC) of api_snapshot_schedule")


class AnalyticsSettings(_FromEnv):
    """The analytics layer: daily summaries, describe CSVs, the curated Parquet lake and its Glue
    catalog, the farm reports, their schedules and the thresholds of their checks."""

    glue_database: str = Field(
        "feedlot",
        description="Glue Data Catalog database of the curated lake (Athena queries it)",
    )
    processed_events_topic: str = Field(
        "feedlot-processed-events",
        description="SNS topic (name or ARN) that gets one 'partition loaded' notice per farm "
        "× day partition the analytics refreshed",
    )
    curated_prefix: str = Field(
        "curated/",
        description="prefix of the curated Parquet lake in the processed bucket "
        "(<prefix><table>/fazenda=<f>/dia=<yyyy-mm-dd>/part-0.parquet)",
    )
    describe_prefix: str = Field(
        "describe/",
        description="prefix of the describe CSVs in the processed bucket "
        "(<prefix>historico_consumo/<fazenda>/<yyyy>/<mm>/<dd>/describe.csv)",
    )
    reports_prefix: str = Field(
        "reports/",
        description="prefix of the farm reports (HTML) in the processed bucket",
    )
    anomaly_threshold_pct: float = Field(
        25.0,
        gt=0,
        description="a lot whose consumo_real deviates from consumo_meta by more than this "
        "percentage is listed by the anomaly check (WARN)",
    )
    freshness_hours: float = Field(
        26.0,
        gt=0,
        description="a farm with no new data in consumo_diario for this many hours is flagged "
        "by the per-farm freshness check",
    )
    analytics_cron: str = Field(
        "0 6 * * *",
        description="cron of analytics_monthly_schedule and farm_report_schedule (monthly "
        "describe, farm reports), in FEEDLOT_ANALYTICS_TIMEZONE",
    )
    analytics_timezone: str = Field(
        "America/Sao_Paulo",
        description="time zone of the analytics schedules (the farms' time zone)",
    )
    reconciliation_cron: str = Field(
        "0 * * * *",
        description="cron of analytics_reconciliation_schedule, in FEEDLOT_ANALYTICS_TIMEZONE",
    )
    reconciliation_days: int = Field(
        3, ge=1, description="days (back from today, UTC) the reconciliation job checks per farm"
    )
    report_trend_days: int = Field(
        30, ge=1, description="days of the trend chart in the farm report"
    )
    analytics_workers: int = Field(
        4,
        ge=1,
        description="threads writing analytics objects (CSV, Parquet, HTML) to S3 at once",
    )
    analytics_db_workers: int = Field(
        2,
        ge=1,
        description="warehouse connections refreshing chunks of partitions at once (each chunk "
        "in its own transaction)",
    )
    analytics_refresh_interval_seconds: int = Field(
        10,
        ge=5,
        description="how often analytics_refresh_sensor looks for partitions loaded since its "
        "last run (one analytics run for all of them, beside the loads)",
    )
    analytics_refresh_max_duty: float = Field(
        0.5,
        gt=0,
        le=1,
        description="share of the time the analytics lane may run: after a refresh that took D "
        "seconds the next starts at least D × (1/share − 1) s after it ended (0.5: it rests as "
        "long as it ran; 1: back to back). At 1,000 streaming farms a refresh takes about a "
        "minute of a core, which the loads need more",
    )
    analytics_refresh_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="niceness an analytics refresh run adds to its process (0: none), so on a "
        "machine it shares with the loads, moto and the Lambda bridge it takes the CPU they "
        "leave; on ECS each run is a task of its own and it changes nothing",
    )
    analytics_refresh_settle_seconds: int = Field(
        10,
        ge=0,
        description="loads recorded in the last N seconds wait for the next tick (a ledger row "
        "stamped just before its transaction commits is never skipped)",
    )
    analytics_refresh_max_partitions: int = Field(
        2000,
        ge=1,
        description="most farm × day partitions in one analytics refresh run (more wait for the "
        "next run)",
    )
    analytics_refresh_lookback_hours: int = Field(
        48,
        ge=0,
        description="on its first tick, analytics_refresh_sensor refreshes partitions loaded in "
        "this many past hours",
    )

    @field_validator("analytics_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("analytics_cron", "reconciliation_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("a cron expression has 5 fields")
        return value


class LocalSettings(_FromEnv):
    """The local stack of ``feedlot local up`` (emulators, ports, state)."""

    state_dir: Path = Field(
        Path(".feedlot"),
        description="local stack state (pids, logs, env, embedded PostgreSQL data, the local lake)",
    )
    moto_port: int = Field(4566, gt=0, lt=65536, description="port of the local moto server")
    moto_fsync: bool = Field(
        False,
        description="the local moto fsyncs its journal (the local lake and dead letters) before "
        "answering each change, so it survives a power cut too; by default a change is written "
        "before the answer (it survives a kill of moto) and fsynced within a second",
    )
    pg_port: int = Field(
        15432, gt=0, lt=65536, description="port of the embedded PostgreSQL of the local stack"
    )
    lambda_port: int = Field(9010, gt=0, lt=65536, description="port of the local Lambda bridge")
    ingest_api_port: int = Field(
        9020, gt=0, lt=65536, description="port of the local API gateway of `feedlot local up`"
    )
    ssm_agent_port: int = Field(
        9030, gt=0, lt=65536, description="port of the local SSM agent stand-in"
    )
    ingest_api_read_timeout_seconds: float = Field(
        10,
        gt=0,
        description="seconds a client of the local API gateway has to send a request's line, "
        "headers and body (also the idle keep-alive timeout); a slower one is disconnected",
    )
    ingest_api_max_connections: int = Field(
        64,
        ge=1,
        description="connections the local API gateway serves at once (one more is answered 503 "
        "with Retry-After)",
    )
    records_inbox: str = Field(
        "feedlot-records-inbox",
        description="local stack: SQS queue subscribed to the records topic that the Lambda "
        "bridge polls (durable across restarts, like Lambda's own async event queue)",
    )
    records_inbox_dlq: str = Field(
        "feedlot-records-inbox-dlq",
        description="local stack: dead-letter queue of the records inbox",
    )

    lambda_concurrency: int = Field(
        8, ge=1, description="Lambda invocations the local bridge runs at once"
    )
    lambda_retry_seconds: str = Field(
        "1,2,4,8,16,30,60",
        description="delays (s) of the local bridge's retries of a failed invocation (bounded "
        "like Lambda's async retries: a 2-minute downstream outage is ridden out)",
    )
    sns_handler: str = Field(
        "feedlot_pipeline.lambdas.sns_handler:handler",
        description="module:function the bridge invokes for the records topic",
    )
    s3_handler: str = Field(
        "feedlot_pipeline.lambdas.s3_handler:handler",
        description="module:function the bridge invokes for file drops",
    )
    ingest_api_handler: str = Field(
        "feedlot_pipeline.lambdas.api_handler:handler",
        description="module:function the local API gateway invokes for POST /consumo",
    )
    dagster_home: Path | None = Field(
        None, validation_alias="DAGSTER_HOME", description="Dagster's instance directory"
    )

    @field_validator("lambda_retry_seconds")
    @classmethod
    def _delays(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                float(part)
        return value

    def retry_delays(self) -> tuple[float, ...]:
        return tuple(float(p) for p in self.lambda_retry_seconds.split(",") if p.strip())


class ObservabilitySettings(_FromEnv):
    """Metrics (CloudWatch), alerts (SNS) and the thresholds the alarms and dashboards use."""

    metrics_namespace: str = Field(
        "Feedlot",
        pattern=r"^[A-Za-z0-9_./#:-]{1,255}$",
        description="CloudWatch namespace of every metric the platform emits (iam.yaml's "
        "MetricsNamespace must name the same one: PutMetricData is granted for it alone)",
    )
    metrics_enabled: bool = Field(
        True,
        description="send metrics to CloudWatch (PutMetricData, EMF); off: metrics are only "
        "logged. Metrics are best effort either way: a CloudWatch failure is logged, never raised",
    )
    metrics_emf_mirror: str = Field(
        "auto",
        pattern=r"^(auto|on|off)$",
        description="whether the Lambdas also send their EMF metric lines with PutMetricData: "
        "auto = only outside the AWS Lambda runtime (AWS_EXECUTION_ENV), where no CloudWatch "
        "Logs extracts EMF from stdout (the local stack); on; off",
    )
    metrics_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="connect and read timeout of one PutMetricData call (then it is dropped, "
        "logged)",
    )
    aws_execution_env: str | None = Field(
        None,
        validation_alias="AWS_EXECUTION_ENV",
        description="set by the AWS Lambda runtime (AWS_Lambda_python3.11…); never set it",
    )
    alerts_topic: str = Field(
        "feedlot-alerts",
        description="SNS topic (name or ARN) of operator alerts: failed Dagster runs and failed "
        "asset checks (structured AlertDocument), and the CloudWatch alarms",
    )
    alerts_inbox: str = Field(
        "feedlot-alerts-inbox",
        description="SQS queue subscribed to the alerts topic (raw delivery) to read alerts "
        "locally: `feedlot dlq list --queue feedlot-alerts-inbox`",
    )
    dagster_ui_url: str = Field(
        "http://127.0.0.1:3000",
        description="base URL of the Dagster UI, for the run links in alerts",
    )
    backlog_interval_seconds: int = Field(
        60,
        ge=10,
        description="interval of backlog_metrics_sensor (queue depths) and farm_freshness_sensor",
    )
    event_to_row_p95_seconds: float = Field(
        900.0,
        gt=0,
        description="event → row latency p95 above which the EventToRowLatency alarm fires "
        "(dashboards draw it as a threshold)",
    )
    farm_silence_hours: float = Field(
        26.0,
        gt=0,
        description="a farm with no rows loaded for this long counts in SilentFarms (alarm > 0)",
    )

    def emf_mirror_on(self) -> bool:
        """Whether a Lambda's EMF lines also go out with PutMetricData (see metrics_emf_mirror)."""
        if self.metrics_emf_mirror == "auto":
            return not (self.aws_execution_env or "").startswith("AWS_Lambda_")
        return self.metrics_emf_mirror == "on"


ALL: tuple[type[_FromEnv], ...] = (
    Settings,
    WorkerSettings,
    BackupSettings,
    PublicApiSettings,
    AnalyticsSettings,
    LocalSettings,
    ObservabilitySettings,
)


def _variables() -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for cls in ALL:
        out.update(cls.variables())
    return out


_VARIABLES = _variables()
DEFAULTS: dict[str, str] = {name: d for name, (d, _) in _VARIABLES.items() if d != ""}
DOCS: dict[str, str] = {name: doc for name, (_, doc) in _VARIABLES.items()}


def describe(name: str) -> str:
    """The meaning of a setting, for error messages."""
    return DOCS.get(name, "no description")


def snapshot(**overrides: Any) -> Settings:
    """Settings from the environment with some fields replaced (tests, tools)."""
    return Settings().model_copy(update=overrides)


_AWS_KEY_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")


def aws_target(service: str) -> tuple[str, tuple[str | None, ...]]:
    """The region and what else selects a boto3 client's endpoint and identity for ``service``.

    Cheap on purpose (read per client lookup, not per client build): the boto3 client cache
    keys on it, so a changed endpoint or identity gets a new client.
    """
    import os

    region = os.environ.get("AWS_DEFAULT_REGION") or DEFAULTS["AWS_DEFAULT_REGION"]
    per_service = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return region, tuple(os.environ.get(v) for v in (*_AWS_KEY_VARS, per_service))


def forwarded_values(names: tuple[str, ...]) -> dict[str, str]:
    """The variables among ``names`` set in this environment, as they are (to hand to a child)."""
    import os

    return {name: os.environ[name] for name in names if os.environ.get(name)}


def export(values: dict[str, str], *, override: bool = True) -> list[str]:
    """Put variables into this process's environment (a tool adopting the local stack's
    ``.feedlot/env``); with ``override=False`` only the unset ones. Returns the names set."""
    import os

    chosen = [k for k in values if override or not os.environ.get(k)]
    for key in chosen:
        os.environ[key] = values[key]
    return chosen


@contextmanager
def scoped_environment(values: dict[str, str] | None = None) -> Iterator[None]:
    """Set variables for a moment; on exit the whole environment is as it was (tools, benches)."""
    import os

    saved = dict(os.environ)
    os.environ.update(values or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
