"""What a Lambda handler sees, locally: its event shapes, its context object, its loading.

Shared by the Lambda bridge (asynchronous invocations from SNS and S3) and the API gateway
(synchronous proxy invocations), so a handler runs locally exactly as deployed.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 60.0
ACCOUNT = "123456789012"

Handler = Callable[[dict, Any], Any]


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_lambda_event(notification: Mapping[str, Any], subscription_arn: str) -> dict:
    """The event Lambda receives for one SNS notification delivered over HTTP.

    The HTTP body spells ``SigningCertURL``/``UnsubscribeURL``; the Lambda event spells
    ``SigningCertUrl``/``UnsubscribeUrl``. Absent optional fields are ``null`` / ``{}`` as in AWS.
    """
    attributes = notification.get("MessageAttributes") or {}
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": notification.get("Type", "Notification"),
                    "MessageId": notification["MessageId"],
                    "TopicArn": notification["TopicArn"],
                    "Subject": notification.get("Subject"),
                    "Message": notification["Message"],
                    "Timestamp": notification.get("Timestamp") or iso_now(),
                    "SignatureVersion": notification.get("SignatureVersion", "1"),
                    "Signature": notification.get("Signature", ""),
                    "SigningCertUrl": notification.get("SigningCertURL")
                    or notification.get("SigningCertUrl", ""),
                    "UnsubscribeUrl": notification.get("UnsubscribeURL")
                    or notification.get("UnsubscribeUrl", ""),
                    "MessageAttributes": {
                        name: {"Type": attr.get("Type", "String"), "Value": attr.get("Value")}
                        for name, attr in attributes.items()
                        if isinstance(attr, Mapping)
                    },
                },
            }
        ]
    }


@dataclass
class LambdaContext:
    """The parts of Lambda's context object handlers (and Powertools) read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{self.function_version}/{os.getpid()}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_arn(region: str, function_name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{function_name}"


def load_handler(spec: str) -> Handler:
    """``module:function`` → the callable; imported on first use so the services start fast."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"handler must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), attr)
