"""The failure topic: whole events that cannot be processed end there, with their reason.

Against the moto server: the failure topic delivers (raw) into the failures inbox queue, which is
what these tests read, exactly as a person would with ``feedlot dlq list --queue …``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import uuid
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from feedlot_pipeline.core import failures
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.failures import failure_document, report_failure
from feedlot_pipeline.local.lambda_bridge import LambdaBridge
from feedlot_pipeline_tests.helpers import inbox, land, record, tick
from feedlot_pipeline_tests.local import handlers


def assert_iso_utc(text: str) -> None:
    assert text.endswith("Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 120


def test_poison_notice_goes_to_dlq_and_its_document_to_the_failure_topic(failures_aws) -> None:
    settings, prov = failures_aws
    assert prov.failure_topic_arn.endswith(":" + os.environ["FEEDLOT_FAILURE_TOPIC"])
    sqs = client("sqs")
    poison_id = sqs.send_message(QueueUrl=prov.queue_url, MessageBody="{not json")["MessageId"]
    land(settings, "good", [record()])

    with dg.instance_for_test() as instance:
        result = tick(instance, settings)
    assert len(result.run_requests) == 1  # the good notice still runs

    (dead,) = sqs.receive_message(
        QueueUrl=prov.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["Body"] == "{not json"
    assert dead["MessageAttributes"]["original_message_id"]["StringValue"] == poison_id

    (doc,) = inbox(prov.failures_inbox_url, 1)
    assert doc["type"] == "feedlot_failure"
    assert doc["source"] == "sensor"
    assert doc["stage"] == "consumption_events_sensor"
    assert "Invalid JSON" in doc["reason"]
    assert doc["reason"] == dead["MessageAttributes"]["reason"]["StringValue"]
    assert doc["payload"] == "{not json"
    assert doc["payload_truncated"] is False
    assert doc["event_id"] == poison_id
    assert doc["details"]["dead_letter_queue"] == settings.sensor_dlq
    assert doc["host"] and doc["feedlot_version"]
    assert_iso_utc(doc["time"])


def test_lambda_failing_after_retries_publishes_its_event(failures_aws, tmp_path: Path) -> None:
    _, prov = failures_aws
    handlers.reset()
    bridge = LambdaBridge(
        tmp_path,
        0,
        handler="feedlot_pipeline_tests.local.handlers:always_fail",
        retry_seconds=(0.05, 0.1),
    ).start()
    try:
        sns = client("sns")
        sns.subscribe(TopicArn=prov.topic_arn, Protocol="http", Endpoint=bridge.endpoint)
        message_id = sns.publish(TopicArn=prov.topic_arn, Message='[{"fazenda": "x"}]')["MessageId"]
        calls = []
        for _ in range(3):
            try:
                calls.append(handlers.CALLS.get(timeout=5))
            except queue.Empty:
                pytest.fail("the handler was not invoked three times")
        assert bridge.invoker.wait_idle(5)
    finally:
        bridge.stop(drain_seconds=2)

    (doc,) = inbox(prov.failures_inbox_url, 1)
    assert doc["source"] == "feedlot-sns-landing"
    assert doc["stage"] == "lambda"
    assert doc["reason"].startswith("RetriesExhausted: RuntimeError: boom")
    assert doc["event_id"] == message_id
    assert json.loads(doc["payload"]) == calls[0]["event"]  # the original Lambda event
    assert doc["details"]["attempts"] == 3
    assert doc["details"]["handler"].endswith(":always_fail")
    (record_file,) = (tmp_path / "lambda-failures").glob("*.json")
    assert doc["details"]["failure_record"] == str(record_file)  # the local record stays too
    assert_iso_utc(doc["time"])
    log = [json.loads(line) for line in (tmp_path / "logs" / "lambda_bridge.log").open()]
    assert any(e["event"] == "failure document published" for e in log)


def test_large_and_binary_payloads_fit_sns_and_say_so(failures_aws) -> None:
    _, prov = failures_aws
    big = "é" * 400_000  # 800 KB of UTF-8, far over SNS's 256 KiB
    assert report_failure(source="test", stage="big", reason="too big", payload=big, event_id="e-1")
    assert report_failure(
        source="test", stage="bin", reason="bad bytes", payload=b"\xff\xfeok", event_id="e-2"
    )
    docs = {d["stage"]: d for d in inbox(prov.failures_inbox_url, 2)}
    assert docs["big"]["payload_truncated"] is True
    assert docs["big"]["payload_bytes"] == len(big.encode())
    assert "truncated" in docs["big"]["note"]
    assert 0 < len(docs["big"]["payload"].encode()) <= failures.MAX_PAYLOAD_BYTES
    assert set(docs["big"]["payload"]) == {"é"}  # cut on a character boundary
    assert docs["bin"]["payload"] == "\ufffd\ufffdok"
    assert docs["bin"]["payload_truncated"] is False


def test_control_characters_that_grow_when_escaped_still_fit() -> None:
    doc = failure_document(
        source="s", stage="t", reason="r", payload="\x01" * 300_000, event_id=None
    )
    text = failures.encode_document(doc)
    assert len(text.encode()) <= failures.SNS_LIMIT
    assert json.loads(text)["payload_truncated"] is True


def test_time_is_iso_utc_whatever_zone_is_given() -> None:
    from datetime import timedelta

    moment = datetime(2024, 3, 18, 9, 30, tzinfo=timezone(timedelta(hours=-3)))
    doc = failure_document(
        source="s", stage="t", reason="r", payload={"a": 1}, event_id="e", time=moment
    )
    assert doc.time == "2024-03-18T12:30:00.000Z"
    assert json.loads(doc.payload) == {"a": 1}


def test_a_failure_to_report_is_logged_never_raised(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FEEDLOT_FAILURE_TOPIC", f"missing-{uuid.uuid4().hex[:8]}")
    with caplog.at_level(logging.ERROR, logger="feedlot.failures"):
        result = report_failure(
            source="sensor", stage="x", reason="why", payload="p", event_id="id-7"
        )
    assert result is None
    (entry,) = [r for r in caplog.records if r.name == "feedlot.failures"]
    assert entry.levelno == logging.ERROR
    assert "could not publish a failure document" in entry.getMessage()
    assert "id-7" in entry.getMessage() and "why" in entry.getMessage()
