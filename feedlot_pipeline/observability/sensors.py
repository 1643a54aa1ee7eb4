"""Sensors of the observability domain: alerts on failed runs and checks, backlog and freshness.

- ``run_failure_alert_sensor`` (``dg.run_failure_sensor``): every failed run → one
  ``AlertDocument`` (kind ``run_failure``) on the alerts topic, with its failed checks.
- ``check_failure_alert_sensor`` (``dg.run_status_sensor`` on SUCCESS): a run that succeeded but
  recorded failed asset check evaluations (non-blocking checks, WARN severity) → one alert
  (kind ``check_failure``). A failing *blocking* check fails its run, so it is reported by the
  run-failure sensor instead: each finished run is looked at by exactly one of the two, so a
  run never raises two alerts.
- ``backlog_metrics_sensor``: QueueDepth / QueueInFlight of the sensor queue, the large-file
  queue and their dead-letter queues (dimension Queue: the queue's role, not its name).
- ``farm_freshness_sensor``: SilentFarms, the registered farms with no rows loaded for
  ``FEEDLOT_FARM_SILENCE_HOURS``, from the ``historico_consumo`` materializations Dagster
  recorded (read incrementally: the cursor keeps each farm's last time with rows).

Both run-status sensors start RUNNING; Dagster keeps their cursor, so failures while the daemon
was down are alerted when it comes back. A publish that SNS refuses raises: the tick shows it and
Dagster notes the sensor's error on the run itself.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg
from botocore.exceptions import ClientError

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.metrics import MetricsBuffer
from feedlot_pipeline.core.records import UNROUTED_FARM
from feedlot_pipeline.core.settings import ObservabilitySettings, Settings
from feedlot_pipeline.ingestion.partitions import farms_partitions, split_key
from feedlot_pipeline.observability.alerts import (
    check_failure_alert,
    failed_checks,
    publish_alert,
    run_failure_alert,
)
from feedlot_pipeline.warehouse.assets import HISTORICO_CONSUMO

RUN_FAILURE_SENSOR = "run_failure_alert_sensor"
CHECK_FAILURE_SENSOR = "check_failure_alert_sensor"
BACKLOG_SENSOR = "backlog_metrics_sensor"
FRESHNESS_SENSOR = "farm_freshness_sensor"
MATERIALIZATION_PAGE = 1000
MAX_PAGES_PER_TICK = 20


def build_run_failure_alert_sensor() -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Publishes an AlertDocument (run id, job, partition, error, failed checks, "
        "link to the run) on the alerts topic for every failed run.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
        doc = run_failure_alert(context)
        message_id = publish_alert(doc)
        context.log.info(f"alert {message_id} published: {doc.title}")

    return run_failure_alert_sensor


def build_check_failure_alert_sensor() -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=CHECK_FAILURE_SENSOR,
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Publishes an AlertDocument for a run that succeeded with failed asset "
        "checks (failed blocking checks fail their run: the run-failure alert lists them).",
    )
    def check_failure_alert_sensor(context: dg.RunStatusSensorContext) -> None:
        checks = failed_checks(context.instance, context.dagster_run.run_id)
        if not checks:
            return
        doc = check_failure_alert(context, checks)
        message_id = publish_alert(doc)
        context.log.info(f"alert {message_id} published: {doc.title}")

    return check_failure_alert_sensor


# --- backlog ------------------------------------------------------------------------------------


def queue_roles(settings: Settings | None = None) -> dict[str, str]:
    """Queue role (the Queue dimension) → queue name or URL."""
    s = settings or Settings()
    return {
        "sensor": s.sensor_queue,
        "sensor-dlq": s.sensor_dlq,
        "large-files": s.large_file_queue,
        "large-files-dlq": s.large_file_dlq,
    }


def queue_backlog(roles: dict[str, str]) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Role → (waiting, in flight), and role → why it could not be read."""
    sqs = client("sqs")
    found: dict[str, tuple[int, int]] = {}
    problems: dict[str, str] = {}
    for role, name in roles.items():
        try:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url(name),
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
        except ClientError as err:
            problems[role] = f"{name}: {err.response.get('Error', {}).get('Code', err)}"
            continue
        found[role] = (
            int(attrs.get("ApproximateNumberOfMessages", 0)),
            int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )
    return found, problems


def emit_backlog(settings: ObservabilitySettings | None = None) -> dict[str, Any]:
    """Read every queue's backlog and emit it; what was read, sent and not readable."""
    found, problems = queue_backlog(queue_roles())
    buffer = MetricsBuffer(settings)
    for role, (waiting, in_flight) in found.items():
        buffer.add("QueueDepth", waiting, Queue=role)
        buffer.add("QueueInFlight", in_flight, Queue=role)
    result = buffer.flush()
    return {"queues": found, "unreadable": problems, "sent": result.sent}


def build_backlog_metrics_sensor() -> dg.SensorDefinition:
    interval = ObservabilitySettings().backlog_interval_seconds

    @dg.sensor(
        name=BACKLOG_SENSOR,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Emits QueueDepth and QueueInFlight of the sensor and large-file queues and "
        "their dead-letter queues to CloudWatch.",
    )
    def backlog_metrics_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        report = emit_backlog()
        for role, problem in report["unreadable"].items():
            context.log.warning(f"queue {role} not readable: {problem}")
        depths = ", ".join(f"{r} {w} (+{f} in flight)" for r, (w, f) in report["queues"].items())
        return dg.SkipReason(f"backlog: {depths or 'no queue readable'}")

    return backlog_metrics_sensor


# --- freshness ----------------------------------------------------------------------------------


def _rows(materialization: dg.AssetMaterialization) -> bool:
    """Whether a historico_consumo materialization loaded rows (no count recorded: assume so)."""
    loaded = materialization.metadata.get("loaded")
    value = getattr(loaded, "value", loaded)
    return value is None or (isinstance(value, int | float) and value > 0)


def update_last_rows(
    instance: dg.DagsterInstance, cursor: dict[str, Any], now: float, hours: float
) -> dict[str, Any]:
    """The cursor moved over the historico_consumo materializations recorded since it: farm →
    last time with rows, and the storage id read up to (first tick: the last ``hours``)."""
    last: dict[str, float] = dict(cursor.get("last", {}))
    after_id = cursor.get("after")
    for _ in range(MAX_PAGES_PER_TICK):
        records_filter = dg.AssetRecordsFilter(
            asset_key=HISTORICO_CONSUMO,
            after_storage_id=after_id,
            after_timestamp=None if after_id is not None else now - hours * 3600,
        )
        result = instance.fetch_materializations(
            records_filter, limit=MATERIALIZATION_PAGE, ascending=True
        )
        for record in result.records:
            after_id = record.storage_id
            mat = record.asset_materialization
            if mat is None or not mat.partition or not _rows(mat):
                continue
            try:
                fazenda, _ = split_key(mat.partition)
            except Exception:  # noqa: BLE001 - a partition key of another shape: not a farm's
                continue
            last[fazenda] = max(last.get(fazenda, 0.0), record.timestamp)
        if not result.has_more:
            break
    return {"after": after_id, "last": last}


def silent_farms(farms: list[str], last: dict[str, float], now: float, hours: float) -> list[str]:
    """Registered farms (not ``_unrouted``) without rows in the last ``hours``."""
    limit = now - hours * 3600
    return sorted(f for f in farms if f != UNROUTED_FARM and last.get(f, 0.0) < limit)


def build_farm_freshness_sensor() -> dg.SensorDefinition:
    interval = ObservabilitySettings().backlog_interval_seconds

    @dg.sensor(
        name=FRESHNESS_SENSOR,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Emits SilentFarms: registered farms with no historico_consumo rows loaded "
        "for FEEDLOT_FARM_SILENCE_HOURS (the alarm fires above 0).",
    )
    def farm_freshness_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        settings = ObservabilitySettings()
        hours = settings.farm_silence_hours
        now = time.time()
        cursor = json.loads(context.cursor) if context.cursor else {}
        cursor = update_last_rows(context.instance, cursor, now, hours)
        farms = list(context.instance.get_dynamic_partitions(farms_partitions.name))
        silent = silent_farms(farms, cursor["last"], now, hours)
        buffer = MetricsBuffer(settings)
        buffer.add("SilentFarms", len(silent))
        buffer.flush()
        if silent:
            context.log.warning(f"farms without rows for {hours:g} h: {', '.join(silent)}")
        # keep only registered farms in the cursor (a removed farm is forgotten)
        cursor["last"] = {f: t for f, t in cursor["last"].items() if f in farms}
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"{len(silent)} of {len(farms)} farm(s) silent for {hours:g} h"
                + (f": {', '.join(silent[:20])}" if silent else "")
            ),
            cursor=json.dumps(cursor),
        )

    return farm_freshness_sensor
