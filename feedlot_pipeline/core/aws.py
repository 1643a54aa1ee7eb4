"""boto3 clients for the whole project.

boto3 honours the standard ``AWS_ENDPOINT_URL`` (and per-service ``AWS_ENDPOINT_URL_<SERVICE>``)
itself, so the same call reaches the local moto server or real AWS; nothing here special-cases
the emulator.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from feedlot_pipeline.core.settings import aws_target

_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)


_CLIENTS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def client(service: str, config: Config | None = None) -> Any:
    """A boto3 client in the configured region, with standard retries (or ``config``: e.g. the
    short timeouts and few retries of best-effort metrics).

    Cached: building one costs ~180 ms here (a Session loads every service model), which a
    Lambda invocation or a per-object loop would otherwise pay again and again. boto3 clients
    are thread-safe; the key holds the pid (no sharing sockets across fork) and every variable
    that selects the endpoint or the identity, so a changed environment gets a new client.
    """
    region, target = aws_target(service)
    key = (service, region, os.getpid(), id(config) if config is not None else None, *target)
    found = _CLIENTS.get(key)
    if found is None:
        with _LOCK:
            found = _CLIENTS.get(key)
            if found is None:
                found = boto3.session.Session().client(
                    service, region_name=region, config=config or _CONFIG
                )
                _CLIENTS[key] = found
    return found


@lru_cache(maxsize=32)
def _account_id(endpoint: str | None) -> str:
    return client("sts").get_caller_identity()["Account"]


def topic_arn(name: str) -> str:
    """ARN of an SNS topic by name, without needing sns:CreateTopic or ListTopics rights."""
    if name.startswith("arn:"):
        return name
    region, target = aws_target("sts")
    return f"arn:aws:sns:{region}:{_account_id(target[0])}:{name}"


def queue_url(name: str) -> str:
    """URL of an SQS queue by name (a URL passes through); looked up once per endpoint."""
    if name.startswith("http"):
        return name
    region, target = aws_target("sqs")
    return _queue_url(name, region, target[0])


@lru_cache(maxsize=64)
def _queue_url(name: str, region: str, endpoint: str | None) -> str:
    return client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
