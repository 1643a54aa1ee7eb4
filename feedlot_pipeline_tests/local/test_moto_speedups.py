"""moto_speedups keeps SQS's answers while making them cheap: the tests' moto runs with it, so
these go through a real moto server (``python -m feedlot_pipeline.local.moto_speedups``)."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from feedlot_pipeline.core.aws import client


@pytest.fixture()
def queue(moto_endpoint: str) -> str:
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=f"speedups-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for start in range(0, 300, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(start, start + 10)],
        )
    return url


def _counts(url: str) -> tuple[int, int]:
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_receive_delete_and_counts_behave_as_sqs(queue: str) -> None:
    sqs = client("sqs")
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60)
    messages = got["Messages"]
    assert len(messages) == 10
    assert _counts(queue) == (290, 10)

    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    entries.append({"Id": "forged", "ReceiptHandle": "not-a-receipt"})
    answer = sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
    assert len(answer["Successful"]) == 10
    assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [
        ("forged", "ReceiptHandleIsInvalid")
    ]
    assert _counts(queue) == (290, 0)
    # deleting again is a success, as on SQS
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=messages[0]["ReceiptHandle"])
    with pytest.raises(ClientError, match="ReceiptHandleIsInvalid"):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="forged-receipt")


def test_an_older_receipt_still_deletes_a_received_again_message(queue: str) -> None:
    sqs = client("sqs")
    first = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0)
    old = {m["MessageId"]: m["ReceiptHandle"] for m in first["Messages"]}
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60)
    both = [m for m in again["Messages"] if m["MessageId"] in old]
    assert both, "a message visible at once is received again"
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=old[both[0]["MessageId"]])
    assert _counts(queue)[0] + _counts(queue)[1] == 299


def test_attribute_queries_keep_their_answers_and_errors(queue: str) -> None:
    sqs = client("sqs")
    one = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["MessageRetentionPeriod"])
    assert one["Attributes"] == {"MessageRetentionPeriod": "345600"}
    everything = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert everything["ApproximateNumberOfMessages"] == "300"
    with pytest.raises(ClientError, match="InvalidAttributeName"):
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["NoSuchAttribute"])
