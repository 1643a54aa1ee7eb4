"""large_file_sensor: files too big for the S3 Lambda become runs of the worker's bulk import.

The S3 Lambda (``lambdas.s3_handler``) sends a ``large_file`` message to the large-file queue
instead of landing a file above ``FEEDLOT_FILEDROP_MAX_BYTES``. Per tick this sensor
1. deletes the messages whose runs an earlier tick recorded (the same discipline as
   ``consumption_events_sensor``: a tick's run requests are stored after the function returns);
2. drains a bounded batch; a message that is not a valid ``large_file`` message (or points
   outside the landing bucket's input prefix) goes to the large-file DLQ with its reason;
3. requests one run of the bulk-import job per file, keyed by the file's event id, so a repeated
   announcement of the same object (multipart uploads, redelivery) runs it once. Each request is
   tagged with the file (``feedlot/input_uri`` …) and logged, so "this file went to the worker"
   is visible in Dagster's runs and the sensor's tick log.
"""

import json
import re
import time
from typing import Any

import dagster as dg

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.settings import env
from feedlot_pipeline.ingestion.sensors import PENDING_MAX_AGE_SECONDS, _run_recorded, park_poison
from feedlot_pipeline.lambdas.s3_handler import LARGE_FILE_TYPE, LARGE_FILE_VERSION
from feedlot_pipeline.worker.jobs import bulk_import_run_config

SENSOR_NAME = "large_file_sensor"
MAX_MESSAGES = 50  # a tick requests at most this many bulk imports
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def parse_large_file(body: str, bucket: str, prefix: str) -> dict:
    """The checked ``large_file`` message; ValueError with the reason when it is not one."""
    try:
        msg: Any = json.loads(body)
    except json.JSONDecodeError as err:
        raise ValueError(f"message is not JSON: {err}") from None
    if not isinstance(msg, dict) or msg.get("type") != LARGE_FILE_TYPE:
        raise ValueError(f"message has no type {LARGE_FILE_TYPE!r}")
    if msg.get("version") != LARGE_FILE_VERSION:
        raise ValueError(f"unsupported large_file version {msg.get('version')!r}")
    for name in ("bucket", "key", "etag", "event_id"):
        if not isinstance(msg.get(name), str):
            raise ValueError(f"large_file message lacks a string {name!r}")
    if not isinstance(msg.get("size"), int) or isinstance(msg["size"], bool) or msg["size"] < 0:
        raise ValueError("large_file message lacks a non-negative integer 'size'")
    if not _EVENT_ID.fullmatch(msg["event_id"]):
        raise ValueError("large_file event_id has characters other than letters, digits, _ -")
    if msg["bucket"] != bucket or not msg["key"].startswith(prefix) or msg["key"] == prefix:
        raise ValueError(
            f"file is outside the landing bucket's input prefix s3://{bucket}/{prefix}"
        )
    return msg


def run_request(job_name: str, msg: dict) -> dg.RunRequest:
    """The bulk-import run of one large file, tagged with the file it imports."""
    uri = f"s3://{msg['bucket']}/{msg['key']}"
    return dg.RunRequest(
        run_key=msg["event_id"],
        job_name=job_name,
        run_config=bulk_import_run_config(uri),
        tags={
            "feedlot/trigger": SENSOR_NAME,
            "feedlot/input_uri": uri,
            "feedlot/file_size": str(msg["size"]),
            "feedlot/file_etag": msg["etag"],
            "feedlot/event_id": msg["event_id"],
        },
    )


def build_large_file_sensor(job: Any) -> dg.SensorDefinition:
    """The sensor, bound to the job that bulk-imports one file on the EC2 worker."""

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=int(env("FEEDLOT_SENSOR_INTERVAL_SECONDS")),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains the large-file queue into bulk-import runs on the EC2 worker.",
    )
    def large_file_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        sqs = client("sqs")
        url = queue_url(env("FEEDLOT_LARGE_FILE_QUEUE"))
        bucket = env("FEEDLOT_LANDING_BUCKET")
        prefix = env("FEEDLOT_LANDING_INPUT_PREFIX")
        cursor = json.loads(context.cursor) if context.cursor else {"pending": []}

        # 1. Delete what earlier ticks recorded.
        still_pending = []
        deleted = 0
        for item in cursor["pending"]:
            if _run_recorded(instance, item["run_key"]):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=item["receipt"])
                deleted += 1
            elif time.time() - item["at"] < PENDING_MAX_AGE_SECONDS:
                still_pending.append(item)
            # else: the receipt is stale; the message reappears and is handled again.

        # 2. Drain a bounded batch.
        messages: list[dict] = []
        while len(messages) < MAX_MESSAGES:
            batch = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, MAX_MESSAGES - len(messages)),
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not batch:
                break
            messages.extend(batch)

        # 3. One run per file.
        run_requests: list[dg.RunRequest] = []
        requested: set[str] = set()
        poison = repeated = 0
        now = time.time()
        for m in messages:
            try:
                msg = parse_large_file(m["Body"], bucket, prefix)
            except ValueError as err:
                dlq = env("FEEDLOT_LARGE_FILE_DLQ")
                park_poison(sqs, url, dlq, queue_url(dlq), m, str(err), "large_file_sensor")
                context.log.warning(f"large-file message {m['MessageId']} sent to the DLQ: {err}")
                poison += 1
                continue
            run_key = msg["event_id"]
            if run_key not in requested and _run_recorded(instance, run_key):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                repeated += 1
                continue
            still_pending.append({"receipt": m["ReceiptHandle"], "run_key": run_key, "at": now})
            if run_key in requested:
                repeated += 1
                continue
            requested.add(run_key)
            request = run_request(job.name, msg)
            run_requests.append(request)
            context.log.info(
                f"large file s3://{msg['bucket']}/{msg['key']} ({msg['size']} bytes) goes to "
                f"the EC2 worker: {job.name} run_key={run_key}"
            )

        if messages or deleted:
            context.log.info(
                f"large files: {len(messages)} received, {deleted} acknowledged, {poison} to DLQ, "
                f"{repeated} repeated; {len(run_requests)} run(s) requested"
            )
        return dg.SensorResult(
            run_requests=run_requests, cursor=json.dumps({"pending": still_pending})
        )

    return large_file_sensor
