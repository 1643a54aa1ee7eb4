"""boto3 clients are cached per target, and a changed environment gets a new one."""

from __future__ import annotations

import pytest

from feedlot_pipeline.core.aws import client, queue_url


def test_client_is_reused_until_the_endpoint_changes(moto_endpoint, monkeypatch) -> None:
    first = client("s3")
    assert client("s3") is first
    assert client("sqs") is not first
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    moved = client("s3")
    assert moved is not first
    assert moved.meta.endpoint_url == "http://127.0.0.1:9"


def test_queue_url_resolves_a_real_queue_and_reports_a_missing_one(aws) -> None:
    settings, prov = aws
    assert queue_url(settings.sensor_queue) == prov.queue_url
    with pytest.raises(Exception, match="NonExistentQueue|does not exist"):
        queue_url("no-such-queue-feedlot")
