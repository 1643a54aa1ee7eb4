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

from typing import Any

import dagster as dg

from feedlot_pipeline.core.contracts import LargeFileMessage
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.sensors import run_recorded
from feedlot_pipeline.worker.jobs import bulk_import_run_config
from feedlot_pipeline.worker.resources import LargeFileQueueResource

SENSOR_NAME = "large_file_sensor"
MAX_MESSAGES = 50  # a tick requests at most this many bulk imports


def parse_large_file(body: str, bucket: str, prefix: str) -> LargeFileMessage:
    """The checked ``large_file`` message; ValueError with the reason when it is not one."""
    msg: LargeFileMessage = LargeFileMessage.parse(body)
    if msg.bucket != bucket or not msg.key.startswith(prefix) or msg.key == prefix:
        raise ValueError(
            f"file is outside the landing bucket's input prefix s3://{bucket}/{prefix}"
        )
    return msg


def run_request(job_name: str, msg: LargeFileMessage) -> dg.RunRequest:
    """The bulk-import run of one large file, tagged with the file it imports."""
    return dg.RunRequest(
        run_key=msg.event_id,
        job_name=job_name,
        run_config=bulk_import_run_config(msg.uri),
        tags={
            "feedlot/trigger": SENSOR_NAME,
            "feedlot/input_uri": msg.uri,
            "feedlot/file_size": str(msg.size),
            "feedlot/file_etag": msg.etag,
            "feedlot/event_id": msg.event_id,
        },
    )


def build_large_file_sensor(job: Any) -> dg.SensorDefinition:
    """The sensor, bound to the job that bulk-imports one file on the EC2 worker."""
    settings = Settings()

    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains the large-file queue into bulk-import runs on the EC2 worker.",
    )
    def large_file_sensor(
        context: dg.SensorEvaluationContext, large_file_queue: LargeFileQueueResource
    ) -> dg.SensorResult:
        instance = context.instance
        tick = large_file_queue.tick(context.cursor, SENSOR_NAME, max_messages=MAX_MESSAGES)
        tick.acknowledge(lambda run_key: run_recorded(instance, run_key))
        run_requests: list[dg.RunRequest] = []
        requested: set[str] = set()
        seen = []
        for m in tick.drain():
            try:
                msg = parse_large_file(
                    m.body, large_file_queue.landing_bucket, large_file_queue.input_prefix
                )
            except ValueError as err:
                tick.park(m, str(err))
                context.log.warning(f"large-file message {m.message_id} sent to the DLQ: {err}")
                continue
            run_key = msg.event_id
            if run_key not in requested and run_recorded(instance, run_key):
                seen.append(m)
                continue
            tick.hold(m, run_key)
            if run_key in requested:
                tick.counts.redelivered += 1
                continue
            requested.add(run_key)
            run_requests.append(run_request(job.name, msg))
            context.log.info(
                f"large file {msg.uri} ({msg.size} bytes) goes to "
                f"the EC2 worker: {job.name} run_key={run_key}"
            )
        tick.ack_now(seen)
        if tick.counts.received or tick.counts.acknowledged:
            context.log.info(
                f"large files: {tick.counts.summary()}; {len(run_requests)} run(s) requested"
            )
        return dg.SensorResult(run_requests=run_requests, cursor=tick.next_cursor())

    return large_file_sensor
