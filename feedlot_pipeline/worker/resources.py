"""The EC2 worker dispatch settings as a Dagster resource that builds a PipesSSMClient.

The worker settings live here, not in settings.DEFAULTS, so the domain stays in its folder (as the
backup settings do). The worker instance is chosen by tag unless FEEDLOT_WORKER_INSTANCE_ID names
one; either way a Pipes session runs on exactly one instance.
"""

import os
from typing import Any

import dagster as dg

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import env
from feedlot_pipeline.worker.pipes_ssm import DEFAULT_DOCUMENT, PipesSSMClient

DEFAULTS: dict[str, str] = {
    "FEEDLOT_PIPES_PREFIX": "pipes/",
    "FEEDLOT_WORKER_TAG_KEY": "Role",
    "FEEDLOT_WORKER_TAG_VALUE": "feedlot-worker",
    "FEEDLOT_WORKER_DOCUMENT": DEFAULT_DOCUMENT,
    "FEEDLOT_WORKER_TIMEOUT_SECONDS": "21600",
    "FEEDLOT_WORKER_POLL_SECONDS": "5",
    "FEEDLOT_WORKER_COMMAND": "feedlot",
    "FEEDLOT_WORKER_OUTPUT_PREFIX": "worker-output/",
}
DOCS: dict[str, str] = {
    "FEEDLOT_PIPES_BUCKET": "bucket of the Dagster Pipes context and messages "
    "(default: FEEDLOT_PROCESSED_BUCKET)",
    "FEEDLOT_PIPES_PREFIX": "key prefix of every Pipes object (IAM grants only this prefix)",
    "FEEDLOT_WORKER_TAG_KEY": "tag key selecting the EC2 worker instance for SSM commands",
    "FEEDLOT_WORKER_TAG_VALUE": "value of that tag",
    "FEEDLOT_WORKER_INSTANCE_ID": "send to this instance id instead of by tag",
    "FEEDLOT_WORKER_DOCUMENT": "SSM document run on the worker (needs a commands parameter)",
    "FEEDLOT_WORKER_TIMEOUT_SECONDS": "longest a dispatched worker job may run before it is "
    "cancelled",
    "FEEDLOT_WORKER_POLL_SECONDS": "how often SSM status and Pipes messages are polled",
    "FEEDLOT_WORKER_COMMAND": "the feedlot console script as the worker's shell finds it",
    "FEEDLOT_WORKER_OUTPUT_PREFIX": "default output prefix of worker jobs in the processed bucket",
}


# Settings the worker needs to agree with Dagster on, sent with each command. Names, buckets and
# a secret's name only: the command line is visible in SSM's history, so never a URL or a key.
FORWARDED_SETTINGS = (
    "AWS_DEFAULT_REGION",
    "FEEDLOT_LANDING_BUCKET",
    "FEEDLOT_LAKE_BUCKET",
    "FEEDLOT_PROCESSED_BUCKET",
    "FEEDLOT_CONSUMO_META_RULE",
    "FEEDLOT_PARTITION_START",
    "FEEDLOT_WAREHOUSE_SECRET",
    "FEEDLOT_WAREHOUSE_SECRET_KEY",
)


def forwarded_settings() -> dict[str, str]:
    """The FORWARDED_SETTINGS set in this environment."""
    return {name: os.environ[name] for name in FORWARDED_SETTINGS if os.environ.get(name)}


def worker_env(name: str) -> str:
    """A worker setting: the environment first, then the default above ('' if none)."""
    value = os.environ.get(name)
    if value not in (None, ""):
        return value
    if name == "FEEDLOT_PIPES_BUCKET":
        return env("FEEDLOT_PROCESSED_BUCKET")
    return DEFAULTS.get(name, "")


class WorkerResource(dg.ConfigurableResource):
    """Where and how worker jobs are dispatched (SSM document, target, Pipes bucket/prefix)."""

    pipes_bucket: str
    pipes_prefix: str = DEFAULTS["FEEDLOT_PIPES_PREFIX"]
    tag_key: str = DEFAULTS["FEEDLOT_WORKER_TAG_KEY"]
    tag_value: str = DEFAULTS["FEEDLOT_WORKER_TAG_VALUE"]
    instance_id: str = ""
    document_name: str = DEFAULT_DOCUMENT
    timeout_seconds: float = float(DEFAULTS["FEEDLOT_WORKER_TIMEOUT_SECONDS"])
    poll_seconds: float = float(DEFAULTS["FEEDLOT_WORKER_POLL_SECONDS"])
    closed_grace_seconds: float = 30.0
    command: str = DEFAULTS["FEEDLOT_WORKER_COMMAND"]
    output_bucket: str = ""
    output_prefix: str = DEFAULTS["FEEDLOT_WORKER_OUTPUT_PREFIX"]
    command_env: dict[str, str] = {}

    @classmethod
    def from_env(cls) -> "WorkerResource":
        """FEEDLOT_WORKER_* / FEEDLOT_PIPES_* from the environment, defaults where unset."""
        return cls(
            pipes_bucket=worker_env("FEEDLOT_PIPES_BUCKET"),
            pipes_prefix=worker_env("FEEDLOT_PIPES_PREFIX"),
            tag_key=worker_env("FEEDLOT_WORKER_TAG_KEY"),
            tag_value=worker_env("FEEDLOT_WORKER_TAG_VALUE"),
            instance_id=worker_env("FEEDLOT_WORKER_INSTANCE_ID"),
            document_name=worker_env("FEEDLOT_WORKER_DOCUMENT"),
            timeout_seconds=float(worker_env("FEEDLOT_WORKER_TIMEOUT_SECONDS")),
            poll_seconds=float(worker_env("FEEDLOT_WORKER_POLL_SECONDS")),
            command=worker_env("FEEDLOT_WORKER_COMMAND"),
            output_bucket=env("FEEDLOT_PROCESSED_BUCKET"),
            output_prefix=worker_env("FEEDLOT_WORKER_OUTPUT_PREFIX"),
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
        bucket = self.output_bucket or env("FEEDLOT_PROCESSED_BUCKET")
        return f"s3://{bucket}/{self.output_prefix}{run_id}/"
