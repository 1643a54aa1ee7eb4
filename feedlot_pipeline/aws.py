"""boto3 clients for the whole project.

boto3 honours the standard ``AWS_ENDPOINT_URL`` (and per-service ``AWS_ENDPOINT_URL_<SERVICE>``)
itself, so the same call reaches the local moto server or real AWS; nothing here special-cases
the emulator.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from feedlot_pipeline.settings import env

_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)


def client(service: str) -> Any:
    """A boto3 client in the configured region, with standard retries."""
    return boto3.session.Session().client(
        service, region_name=env("AWS_DEFAULT_REGION"), config=_CONFIG
    )


@lru_cache(maxsize=32)
def _account_id(endpoint: str | None) -> str:
    return client("sts").get_caller_identity()["Account"]


def topic_arn(name: str) -> str:
    """ARN of an SNS topic by name, without needing sns:CreateTopic or ListTopics rights."""
    import os

    if name.startswith("arn:"):
        return name
    account = _account_id(os.environ.get("AWS_ENDPOINT_URL"))
    return f"arn:aws:sns:{env('AWS_DEFAULT_REGION')}:{account}:{name}"


def queue_url(name: str) -> str:
    """URL of an SQS queue by name (a URL passes through)."""
    if name.startswith("http"):
        return name
    return client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
