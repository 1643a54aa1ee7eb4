"""Operator alerts: a structured ``AlertDocument`` per failed run (or run with failed checks) on the
alerts topic (``FEEDLOT_ALERTS_TOPIC``), which also receives the CloudWatch alarms
(``deploy/cloudformation/monitoring.yaml``).

The documents are built from what Dagster stored about the run: its failure event, its step
failures, its asset check evaluations and its tags; the link points at the run in the UI
(``FEEDLOT_DAGSTER_UI_URL``). Subscribers (e-mail, a pager, the ``feedlot-alerts-inbox`` queue
locally) need nothing but the message body: SNS message attributes are set too, but some
deliveries drop them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.core.contracts import AlertDocument, FailedCheck
from feedlot_pipeline.core.settings import ObservabilitySettings

MAX_ERROR_CHARS = 4000
MAX_CHECKS = 50
MAX_METADATA_CHARS = 2000
SNS_LIMIT = 250 * 1024
KEPT_TAGS = (
    "dagster/partition",
    "dagster/asset_partition_range_start",
    "dagster/asset_partition_range_end",
    "dagster/sensor_name",
    "dagster/schedule_name",
    "dagster/backfill",
)


def run_url(run_id: str, settings: ObservabilitySettings | None = None) -> str:
    s = settings or ObservabilitySettings()
    return f"{s.dagster_ui_url.rstrip('/')}/runs/{run_id}"


def error_text(error: SerializableErrorInfo | None) -> str | None:
    """The messages of an error and its causes, innermost last, without stack traces."""
    if error is None:
        return None
    return "\n← ".join(_messages(error))[:MAX_ERROR_CHARS]


def _messages(error: SerializableErrorInfo) -> list[str]:
    """``Class: message`` of an error and its causes (at most 5), module paths dropped."""
    parts: list[str] = []
    current: SerializableErrorInfo | None = error
    while current is not None and len(parts) < 5:
        message = current.message.strip()
        head, _, rest = message.partition(": ")
        if current.cls_name and head.rsplit(".", 1)[-1] == current.cls_name:
            message = f"{current.cls_name}: {rest}"  # "pkg.mod.Error: text" -> "Error: text"
        elif current.cls_name:
            message = f"{current.cls_name}: {message}"
        parts.append(message)
        current = current.cause
    return parts


def headline(error: SerializableErrorInfo | None) -> str | None:
    """The first line of the innermost cause: what went wrong, for a title."""
    if error is None:
        return None
    lines = [line for line in _messages(error)[-1].splitlines() if line.strip()]
    return lines[0].strip() if lines else None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _metadata(entries: dict[str, Any]) -> dict[str, Any]:
    plain = {str(k): _plain(getattr(v, "value", v)) for k, v in entries.items()}
    if len(json.dumps(plain)) > MAX_METADATA_CHARS:
        return {"truncated": True, "keys": sorted(plain)[:50]}
    return plain


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[FailedCheck]:
    """Every asset check evaluation of the run that did not pass, in the order they ran."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    out: list[FailedCheck] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if evaluation is None or getattr(evaluation, "passed", True):
            continue
        out.append(
            FailedCheck(
                asset=evaluation.asset_key.to_user_string(),
                check=evaluation.check_name,
                partition=evaluation.partition,
                severity=evaluation.severity.value,
                blocking=evaluation.blocking,
                description=evaluation.description,
                metadata=_metadata(dict(evaluation.metadata)),
            )
        )
    return out


def _finished_at(instance: dg.DagsterInstance, run_id: str) -> str:
    record = instance.get_run_record_by_id(run_id)
    stamp = record.end_time if record is not None and record.end_time else None
    moment = datetime.fromtimestamp(stamp, timezone.utc) if stamp else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _tags(run: dg.DagsterRun) -> dict[str, str]:
    return {k: str(v) for k, v in run.tags.items() if k in KEPT_TAGS or k.startswith("feedlot/")}


def _document(
    *,
    kind: str,
    severity: str,
    title: str,
    run: dg.DagsterRun,
    instance: dg.DagsterInstance,
    checks: Sequence[FailedCheck],
    error: str | None,
    failed_steps: Sequence[str],
    settings: ObservabilitySettings,
) -> AlertDocument:
    partitions = sorted({c.partition for c in checks if c.partition})
    return AlertDocument(
        kind=kind,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        title=title[:200],
        run_id=run.run_id,
        job=run.job_name,
        partition=run.tags.get("dagster/partition"),
        partitions=partitions,
        error=error,
        failed_steps=list(failed_steps),
        failed_checks=list(checks[:MAX_CHECKS]),
        failed_checks_total=len(checks),
        run_url=run_url(run.run_id, settings),
        time=_finished_at(instance, run.run_id),
        tags=_tags(run),
        host=socket.gethostname(),
    )


def run_failure_alert(
    context: dg.RunFailureSensorContext, settings: ObservabilitySettings | None = None
) -> AlertDocument:
    """The alert for a failed run: the first failed step's error (else the run's), its failed
    steps, and the checks that failed in it (a failing blocking check is why it failed)."""
    s = settings or ObservabilitySettings()
    run = context.dagster_run
    steps = context.get_step_failure_events()
    errors = [getattr(e.event_specific_data, "error", None) for e in steps if e is not None]
    failure = context.failure_event.event_specific_data
    first = next((e for e in errors if e is not None), None) or getattr(failure, "error", None)
    error = error_text(first)
    if error is None:
        error = (context.failure_event.message or "").strip()[:MAX_ERROR_CHARS] or None
    checks = failed_checks(context.instance, run.run_id)
    partition = run.tags.get("dagster/partition")
    where = f" [{partition}]" if partition else ""
    title = f"{run.job_name}{where} failed"
    if checks:
        title += f": {len(checks)} failed check(s)"
    elif error:
        title += f": {(headline(first) or error.splitlines()[0])[:140]}"
    return _document(
        kind="run_failure",
        severity="error",
        title=title,
        run=run,
        instance=context.instance,
        checks=checks,
        error=error,
        failed_steps=[e.step_key for e in steps if e is not None and e.step_key],
        settings=s,
    )


def check_failure_alert(
    context: dg.RunStatusSensorContext,
    checks: Sequence[FailedCheck],
    settings: ObservabilitySettings | None = None,
) -> AlertDocument:
    """The alert for a run that succeeded with failed checks (non-blocking, or WARN severity)."""
    s = settings or ObservabilitySettings()
    run = context.dagster_run
    severity = "error" if any(c.severity == "ERROR" for c in checks) else "warning"
    names = sorted({c.check for c in checks})
    title = f"{run.job_name}: {len(checks)} failed check(s): {', '.join(names)}"
    return _document(
        kind="check_failure",
        severity=severity,
        title=title,
        run=run,
        instance=context.instance,
        checks=checks,
        error=None,
        failed_steps=[],
        settings=s,
    )


def encode(doc: AlertDocument) -> str:
    """JSON under SNS's 256 KiB: check metadata goes first, then checks, when it would not fit."""
    text = doc.to_json()
    if len(text.encode()) > SNS_LIMIT:
        lean = [c.model_copy(update={"metadata": {}}) for c in doc.failed_checks]
        text = doc.model_copy(update={"failed_checks": lean}).to_json()
    if len(text.encode()) > SNS_LIMIT:
        text = doc.model_copy(update={"failed_checks": doc.failed_checks[:5]}).to_json()
    return text


def _subject(title: str) -> str:
    """SNS subjects: printable ASCII, no line breaks, at most 100 characters."""
    text = f"feedlot alert: {title}"
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:100]


def publish_alert(doc: AlertDocument, settings: ObservabilitySettings | None = None) -> str:
    """Publish on the alerts topic; the SNS message id. Raises when SNS refuses (the sensor's tick
    then shows the error, and Dagster notes it on the run)."""
    s = settings or ObservabilitySettings()
    response = client("sns").publish(
        TopicArn=topic_arn(s.alerts_topic),
        Message=encode(doc),
        Subject=_subject(doc.title),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": doc.kind},
            "job": {"DataType": "String", "StringValue": doc.job[:256] or "-"},
            "severity": {"DataType": "String", "StringValue": doc.severity},
        },
    )
    return response["MessageId"]


def provision_alerts(settings: ObservabilitySettings | None = None) -> tuple[str, str]:
    """The alerts topic and its inbox queue (raw delivery), idempotently: (topic ARN, inbox URL).

    For the local stack and tests; on AWS the topic comes from monitoring.yaml.
    """
    s = settings or ObservabilitySettings()
    arn = client("sns").create_topic(Name=s.alerts_topic.rsplit(":", 1)[-1])["TopicArn"]
    sqs = client("sqs")
    inbox_url = sqs.create_queue(
        QueueName=s.alerts_inbox, Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "alerts-topic-delivers",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": inbox_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=inbox_url, Attributes={"Policy": json.dumps(policy)})
    client("sns").subscribe(  # idempotent: the same endpoint returns the same subscription
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=inbox_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return arn, inbox_url
