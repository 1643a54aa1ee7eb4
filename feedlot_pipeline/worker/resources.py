"""The EC2 worker dispatch settings as a Dagster resource that builds a PipesSSMClient.

Settings come from core.settings.WorkerSettings (FEEDLOT_WORKER_*, FEEDLOT_PIPES_*). The worker
instance is chosen by tag unless FEEDLOT_WORKER_INSTANCE_ID names one; either way a Pipes session
runs on exactly one instance.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings, WorkerSettings, forwarded_values
from feedlot_pipeline.ingestion.resources import SensorQueueResource
from feedlot_pipeline.worker.pipes_ssm import DEFAULT_DOCUMENT, PipesSSMClient

_DEFAULTS = WorkerSettings.model_construct()


def forwarded_settings() -> dict[str, str]:
    """The settings both sides must agree on, as this process has them (WorkerSettings.FORWARDED).

    Names, buckets and a secret's name only: the SSM command line is visible in its history.
    """
    return forwarded_values(WorkerSettings.FORWARDED)


class WorkerResource(dg.ConfigurableResource):
    """Where and how worker jobs are dispatched (SSM document, target, Pipes bucket/prefix)."""

    pipes_bucket: str
    pipes_prefix: str = _DEFAULTS.pipes_prefix
    tag_key: str = _DEFAULTS.worker_tag_key
    tag_value: str = _DEFAULTS.worker_tag_value
    instance_id: str = ""
    document_name: str = DEFAULT_DOCUMENT
    timeout_seconds: float = float(_DEFAULTS.worker_timeout_seconds)
    poll_seconds: float = float(_DEFAULTS.worker_poll_seconds)
    closed_grace_seconds: float = 30.0
    command: str = _DEFAULTS.worker_command
    output_bucket: str = ""
    output_prefix: str = _DEFAULTS.worker_output_prefix
    command_env: dict[str, str] = {}

    @classmethod
    def from_env(cls) -> WorkerResource:
        """FEEDLOT_WORKER_* / FEEDLOT_PIPES_* from the environment, defaults where unset."""
        core, w = Settings(), WorkerSettings()
        return cls(
            pipes_bucket=w.pipes_bucket_or(core.processed_bucket),
            pipes_prefix=w.pipes_prefix,
            tag_key=w.worker_tag_key,
            tag_value=w.worker_tag_value,
            instance_id=w.worker_instance_id or "",
            document_name=w.worker_document,
            timeout_seconds=w.worker_timeout_seconds,
            poll_seconds=w.worker_poll_seconds,
            command=w.worker_command,
            output_bucket=core.processed_bucket,
            output_prefix=w.worker_output_prefix,
            command_env=forwarded_settings(),
        )

    def pipes_client(self) -> PipesSSMClient:
        return PipesSSMClient(
            ssm_client=client("ssm"),
            s3_client=client("s3"),
            bucket=self.pipes_bucket,
            key_prefix=self.pipes_prefix,
            document_name=self.document_name,
            poll_seconds=self.poll_seconds,
            closed_grace_seconds=self.closed_grace_seconds,
        )

    def target(self) -> dict[str, Any]:
        """``instance_ids=`` or ``targets=`` for PipesSSMClient.run."""
        if self.instance_id:
            return {"instance_ids": [self.instance_id]}
        return {"targets": [{"Key": f"tag:{self.tag_key}", "Values": [self.tag_value]}]}

    def default_output_uri(self, run_id: str) -> str:
        bucket = self.output_bucket or Settings().processed_bucket
        return f"s3://{bucket}/{self.output_prefix}{run_id}/"


class LargeFileQueueResource(SensorQueueResource):
    """The large-file queue, and where the files it announces may live (the landing input)."""

    landing_bucket: str
    input_prefix: str

    @classmethod
    def from_settings(cls, s: Settings) -> LargeFileQueueResource:
        return cls(
            queue=s.large_file_queue,
            dlq=s.large_file_dlq,
            landing_bucket=s.landing_bucket,
            input_prefix=s.landing_input_prefix,
        )
