"""The Lambda bridge: SNS (moto server) delivers over HTTP, the bridge invokes like async Lambda."""

from __future__ import annotations

import json
import queue
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import LocalSettings
from feedlot_pipeline.local.invoker import DEFAULT_RETRY_SECONDS, Invoker
from feedlot_pipeline.local.lambda_bridge import LambdaBridge, to_lambda_event
from feedlot_pipeline_tests.local import handlers

HANDLERS = "feedlot_pipeline_tests.local.handlers"
SNS_KEYS = {
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertUrl",
    "UnsubscribeUrl",
    "MessageAttributes",
}

# An HTTP notification as AWS documents it (headers and body), attributes included.
AWS_HTTP_BODY = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Subject": "My First Message",
    "Message": '[{"cod_cliente": "FazendaUm"}]',
    "Timestamp": "2012-05-02T00:54:06.655Z",
    "SignatureVersion": "1",
    "Signature": "EXAMPLEw6JRN...",
    "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96",
    "MessageAttributes": {
        "correlation_id": {"Type": "String", "Value": "corr-9"},
        "source": {"Type": "String", "Value": "producer"},
    },
}
SUBSCRIPTION = "arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96"


def _bridge(tmp_path: Path, handler: str, retry_seconds=(0.05, 0.1)) -> LambdaBridge:
    return LambdaBridge(tmp_path, 0, handler=f"{HANDLERS}:{handler}", retry_seconds=retry_seconds)


@pytest.fixture()
def make_bridge(tmp_path: Path) -> Iterator:
    handlers.reset()
    started: list[LambdaBridge] = []

    def make(handler: str, retry_seconds=(0.05, 0.1)) -> LambdaBridge:
        bridge = _bridge(tmp_path, handler, retry_seconds).start()
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        bridge.stop(drain_seconds=2)


def _next_call(timeout: float = 5.0) -> dict:
    try:
        return handlers.CALLS.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"handler not invoked within {timeout}s") from None


def _post(bridge: LambdaBridge, body: dict | str, **headers: str) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(
        bridge.endpoint,
        data=data,
        headers={"Content-Type": "text/plain; charset=UTF-8", **headers},
        timeout=5,
    )


def test_sns_delivery_becomes_a_lambda_event_and_publish_does_not_wait(aws, make_bridge) -> None:
    _, prov = aws
    bridge = make_bridge("slow")
    sns = client("sns")
    sub = sns.subscribe(
        TopicArn=prov.topic_arn,
        Protocol="http",
        Endpoint=bridge.endpoint,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]

    started = time.monotonic()
    message_id = sns.publish(TopicArn=prov.topic_arn, Message='[{"a": 1}]', Subject="consumo")[
        "MessageId"
    ]
    publish_seconds = time.monotonic() - started
    assert publish_seconds < 0.8  # the handler sleeps 1 s: Publish returned before it finished

    call = _next_call()
    (record,) = call["event"]["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["EventVersion"] == "1.0"
    assert record["EventSubscriptionArn"] == sub
    body = record["Sns"]
    assert set(body) == SNS_KEYS
    assert body["Type"] == "Notification"
    assert body["MessageId"] == message_id
    assert body["TopicArn"] == prov.topic_arn
    assert body["Subject"] == "consumo"
    assert body["Message"] == '[{"a": 1}]'
    assert body["SigningCertUrl"].startswith("https://sns.")
    assert "Action=Unsubscribe" in body["UnsubscribeUrl"]
    assert body["Signature"] and body["SignatureVersion"]
    datetime.fromisoformat(body["Timestamp"].replace("Z", "+00:00"))
    assert isinstance(body["MessageAttributes"], dict)

    assert call["function_name"] == "feedlot-sns-landing"
    assert call["invoked_function_arn"].startswith("arn:aws:lambda:us-east-1:")
    assert call["memory_limit_in_mb"] > 0
    assert 0 < call["remaining_ms"] <= 60_000
    assert call["aws_request_id"]


def test_aws_shaped_http_notification_keeps_attributes_and_subscription(make_bridge) -> None:
    bridge = make_bridge("record")
    response = _post(
        bridge,
        AWS_HTTP_BODY,
        **{"x-amz-sns-message-type": "Notification", "x-amz-sns-subscription-arn": SUBSCRIPTION},
    )
    assert response.status_code == 200
    (record,) = _next_call()["event"]["Records"]
    assert record == to_lambda_event(AWS_HTTP_BODY, SUBSCRIPTION)["Records"][0]
    assert record["EventSubscriptionArn"] == SUBSCRIPTION
    sns = record["Sns"]
    assert sns["SigningCertUrl"] == AWS_HTTP_BODY["SigningCertURL"]
    assert sns["UnsubscribeUrl"] == AWS_HTTP_BODY["UnsubscribeURL"]
    assert sns["MessageAttributes"] == {
        "correlation_id": {"Type": "String", "Value": "corr-9"},
        "source": {"Type": "String", "Value": "producer"},
    }
    assert "SigningCertURL" not in sns and "UnsubscribeURL" not in sns


def test_event_without_subject_or_attributes_has_aws_nulls() -> None:
    body = {k: v for k, v in AWS_HTTP_BODY.items() if k not in ("Subject", "MessageAttributes")}
    sns = to_lambda_event(body, SUBSCRIPTION)["Records"][0]["Sns"]
    assert sns["Subject"] is None
    assert sns["MessageAttributes"] == {}


def test_failing_handler_is_retried_twice_then_recorded(tmp_path: Path, aws, make_bridge) -> None:
    _, prov = aws
    bridge = make_bridge("always_fail")
    sns = client("sns")
    sns.subscribe(TopicArn=prov.topic_arn, Protocol="http", Endpoint=bridge.endpoint)
    message_id = sns.publish(TopicArn=prov.topic_arn, Message="[]")["MessageId"]

    calls = [_next_call() for _ in range(3)]
    assert len({c["aws_request_id"] for c in calls}) == 1  # one async event, three attempts
    assert bridge.invoker.wait_idle(5)
    with pytest.raises(queue.Empty):
        handlers.CALLS.get(timeout=0.3)  # no fourth attempt

    (failure_file,) = (tmp_path / "lambda-failures").glob("*.json")
    assert stat.S_IMODE(failure_file.stat().st_mode) == 0o600  # it holds the records
    assert stat.S_IMODE(failure_file.parent.stat().st_mode) == 0o700
    failure = json.loads(failure_file.read_text())
    assert failure["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    assert failure["requestContext"]["requestId"] == calls[0]["aws_request_id"]
    assert failure["requestPayload"] == calls[0]["event"]
    assert failure["requestPayload"]["Records"][0]["Sns"]["MessageId"] == message_id
    assert failure["responsePayload"]["errorType"] == "RuntimeError"
    assert "warehouse is on fire" in failure["responsePayload"]["errorMessage"]

    log = [json.loads(line) for line in (tmp_path / "logs" / "lambda_bridge.log").open()]
    events = [entry["event"] for entry in log if entry.get("message_id") == message_id]
    assert events == [
        "notification received",
        "invocation failed, will retry",
        "invocation failed, will retry",
        "invocation failed for good",
    ]
    health = requests.get(f"http://127.0.0.1:{bridge.port}/health", timeout=5).json()
    assert (health["received"], health["attempts"], health["retried"], health["failed"]) == (
        1,
        3,
        2,
        1,
    )


def test_transient_failure_succeeds_on_retry(tmp_path: Path, make_bridge) -> None:
    bridge = make_bridge("fail_once")
    assert _post(bridge, AWS_HTTP_BODY).status_code == 200
    first, second = _next_call(), _next_call()
    assert first["aws_request_id"] == second["aws_request_id"]
    assert bridge.invoker.wait_idle(5)
    assert bridge.invoker.stats.succeeded == 1
    assert not (tmp_path / "lambda-failures").exists()


def test_stopping_with_pending_retries_records_them(tmp_path: Path) -> None:
    handlers.reset()
    bridge = _bridge(tmp_path, "always_fail", retry_seconds=(30.0, 30.0)).start()
    assert _post(bridge, AWS_HTTP_BODY).status_code == 200
    _next_call()
    bridge.stop(drain_seconds=0.2)
    (failure_file,) = (tmp_path / "lambda-failures").glob("*.json")
    failure = json.loads(failure_file.read_text())
    assert failure["requestContext"]["condition"] == "BridgeStopped"
    assert failure["responsePayload"]["errorType"] == "RuntimeError"


def test_confirmations_are_logged_and_bad_requests_refused(tmp_path: Path, make_bridge) -> None:
    bridge = make_bridge("record")
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37...",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Message": "You have chosen to subscribe to the topic ...",
        "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&...",
    }
    assert _post(bridge, confirmation).status_code == 200
    assert _post(bridge, "{not json").status_code == 400
    assert _post(bridge, {"Type": "Notification", "Message": "x"}).status_code == 400
    assert requests.get(f"http://127.0.0.1:{bridge.port}/nope", timeout=5).status_code == 404
    health = requests.get(f"http://127.0.0.1:{bridge.port}/health", timeout=5).json()
    assert health["confirmations"] == 1
    assert health["received"] == 0
    assert handlers.CALLS.empty()
    log = (tmp_path / "logs" / "lambda_bridge.log").read_text()
    assert "SubscriptionConfirmation received" in log
    assert "ConfirmSubscription" in log


def test_handler_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_SNS_HANDLER", f"{HANDLERS}:record")
    bridge = LambdaBridge(tmp_path, 0)
    assert bridge.handler_spec == f"{HANDLERS}:record"
    monkeypatch.delenv("FEEDLOT_SNS_HANDLER")
    other = LambdaBridge(tmp_path, 0)
    assert other.handler_spec == "feedlot_pipeline.lambdas.sns_handler:handler"
    for b in (bridge, other):
        b.stop(drain_seconds=0)


def test_a_failure_is_counted_only_once_its_record_is_written(
    tmp_path: Path, make_bridge, monkeypatch
) -> None:
    """Whoever waits for the failure count (tests' settle(), `feedlot local status`) finds the
    failure record: it is written (here slowly) before the count moves."""
    original = Invoker._write_failure

    def slow_write(self, inv, condition):  # noqa: ANN001, ANN202
        time.sleep(0.5)
        return original(self, inv, condition)

    monkeypatch.setattr(Invoker, "_write_failure", slow_write)
    bridge = make_bridge("always_fail", retry_seconds=())
    seen: list[int] = []

    def waiter() -> None:
        deadline = time.monotonic() + 10
        while bridge.invoker.stats.failed == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(len(list((tmp_path / "lambda-failures").glob("*.json"))))

    watching = threading.Thread(target=waiter)
    watching.start()
    assert _post(bridge, AWS_HTTP_BODY).status_code == 200
    watching.join(15)
    assert seen == [1]
    assert bridge.invoker.wait_idle(5) and bridge.invoker.stats.failed == 1


def test_default_retries_ride_out_a_downstream_outage(
    tmp_path: Path, make_bridge, monkeypatch
) -> None:
    monkeypatch.delenv("FEEDLOT_LAMBDA_RETRY_SECONDS", raising=False)
    assert LocalSettings().retry_delays() == DEFAULT_RETRY_SECONDS == (1, 2, 4, 8, 16, 30, 60)
    assert LambdaBridge(tmp_path, 0).invoker.retry_seconds == DEFAULT_RETRY_SECONDS
    # A 30 s outage ends before the retries do (1+2+4+8+16 = 31 s), with two retries to spare.
    assert sum(DEFAULT_RETRY_SECONDS[:5]) > 30
    # The same schedule a hundred times faster, against a 0.5 s outage (a 50 s one, scaled).
    scaled = tuple(d / 100 for d in DEFAULT_RETRY_SECONDS)
    handlers.OUTAGE_UNTIL = time.monotonic() + 0.5
    bridge = make_bridge("during_outage", retry_seconds=scaled)
    assert _post(bridge, AWS_HTTP_BODY).status_code == 200
    assert bridge.invoker.wait_idle(10)
    assert (bridge.invoker.stats.succeeded, bridge.invoker.stats.failed) == (1, 0)
    assert bridge.invoker.stats.attempts > 3
    assert not (tmp_path / "lambda-failures").exists()
    # The old schedule (1 s, 2 s; scaled) turns the same outage into a failure record.
    handlers.OUTAGE_UNTIL = time.monotonic() + 0.5
    old = make_bridge("during_outage", retry_seconds=(0.01, 0.02))
    assert _post(old, AWS_HTTP_BODY).status_code == 200
    assert old.invoker.wait_idle(10) and old.invoker.stats.failed == 1


# --- the records inbox (durable way in) ----------------------------------------------------------


def _inbox_depth(url: str) -> tuple[int, int]:
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def _inbox_bridge(tmp_path: Path, handler: str, inbox: str) -> LambdaBridge:
    return LambdaBridge(
        tmp_path,
        0,
        handler=f"{HANDLERS}:{handler}",
        retry_seconds=(0.05, 0.1),
        records_inbox=inbox,
    ).start()


def test_published_while_the_bridge_is_down_is_invoked_once_it_is_up(tmp_path: Path, aws) -> None:
    """Publishes succeed with no bridge running; a bridge started later invokes every message
    (attributes kept) and deletes each only after success."""
    settings, prov = aws
    handlers.reset()
    sns = client("sns")
    sent = []
    for i in range(5):
        sent.append(
            sns.publish(
                TopicArn=prov.topic_arn,
                Message=json.dumps([{"n": i}]),
                MessageAttributes={
                    "correlation_id": {"DataType": "String", "StringValue": f"c{i}"}
                },
            )["MessageId"]
        )
    assert _inbox_depth(prov.records_inbox_url) == (5, 0)  # waiting, nothing lost
    bridge = _inbox_bridge(tmp_path, "record", LocalSettings().records_inbox)
    try:
        calls = [_next_call(10) for _ in range(5)]
        records = [c["event"]["Records"][0] for c in calls]
        assert sorted(r["Sns"]["MessageId"] for r in records) == sorted(sent)
        assert {r["Sns"]["MessageAttributes"]["correlation_id"]["Value"] for r in records} == {
            f"c{i}" for i in range(5)
        }
        deadline = time.monotonic() + 10
        while _inbox_depth(prov.records_inbox_url) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _inbox_depth(prov.records_inbox_url) == (0, 0)
        assert bridge.health()["inbox"]["deleted"] == 5
    finally:
        bridge.stop(drain_seconds=2)


def test_a_bridge_stopped_mid_invocation_leaves_the_message_in_the_inbox(
    tmp_path: Path, aws
) -> None:
    """An invocation still retrying when the bridge stops is neither recorded as a failure nor
    deleted: the queue delivers it again to the next bridge."""
    settings, prov = aws
    handlers.reset()
    bridge = LambdaBridge(
        tmp_path,
        0,
        handler=f"{HANDLERS}:always_fail",
        retry_seconds=(30.0,),
        records_inbox=LocalSettings().records_inbox,
    ).start()
    try:
        client("sns").publish(TopicArn=prov.topic_arn, Message=json.dumps([{"n": 1}]))
        _next_call(10)
    finally:
        bridge.stop(drain_seconds=0.5)
    assert bridge.health()["inbox"]["kept"] == 1 and bridge.health()["inbox"]["deleted"] == 0
    assert not list((tmp_path / "lambda-failures").glob("*.json"))
    assert sum(_inbox_depth(prov.records_inbox_url)) == 1  # still there, invisible for now
