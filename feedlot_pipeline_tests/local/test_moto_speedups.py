"""moto_speedups keeps SQS's answers while making them cheap: the tests' moto runs with it, so
these go through a real moto server (``python -m feedlot_pipeline.local.moto_speedups``)."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from feedlot_pipeline.core.aws import client
from feedlot_pipeline_tests.helpers import NAGLE_DELAY_SECONDS, median_request_seconds


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


def test_sns_deliveries_are_signed_with_one_served_certificate(moto_endpoint: str) -> None:
    """Each message SNS delivers still carries a valid SignatureVersion 2 signature; the
    subscription's messages share one certificate, which moto serves at its SigningCertURL."""
    import base64
    import json

    import requests
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    tag = uuid.uuid4().hex[:8]
    sns, sqs = client("sns"), client("sqs")
    topic = sns.create_topic(Name=f"signed-{tag}")["TopicArn"]
    url = sqs.create_queue(QueueName=f"signed-{tag}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    for i in range(3):
        sns.publish(TopicArn=topic, Message=f"message {i}")
    envelopes = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    ]
    assert sorted(e["Message"] for e in envelopes) == ["message 0", "message 1", "message 2"]
    (cert_url,) = {e["SigningCertURL"] for e in envelopes}
    pem = requests.get(
        f"{moto_endpoint}/{cert_url.rsplit('/', 1)[1]}",
        headers={  # moto's server picks the service from the credential scope
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sns/"
            "aws4_request, SignedHeaders=host, Signature=0"
        },
        timeout=10,
    )
    assert pem.status_code == 200, pem.text
    key = x509.load_pem_x509_certificate(pem.content).public_key()
    for e in envelopes:
        assert e["SignatureVersion"] == "2" and e["Type"] == "Notification"
        signed = "".join(
            f"{name}\n{e[name]}\n"
            for name in ("Message", "MessageId", "Timestamp", "TopicArn", "Type")
        )
        key.verify(  # raises InvalidSignature on a wrong one
            base64.b64decode(e["Signature"]), signed.encode(), padding.PKCS1v15(), hashes.SHA256()
        )


def test_connections_stay_open_and_unread_bodies_are_drained(moto_endpoint: str) -> None:
    """Requests share one HTTP/1.1 connection, even after one whose body moto never read."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(moto_endpoint)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    bucket = f"keepalive-{uuid.uuid4().hex[:8]}"

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        # Unsigned, so readable only with an ACL saying so (a throwaway object in a test moto).
        conn.request(method, path, body=body, headers={"x-amz-acl": "public-read"})
        answer = conn.getresponse()
        return answer.status, answer.read(), answer.getheader("Connection", "")

    assert call("PUT", f"/{bucket}")[0] == 200
    sock = conn.sock
    assert call("PUT", f"/{bucket}/k", b"hello")[::2] == (200, "keep-alive")
    status, body, header = call("GET", f"/{bucket}/k", b"an ignored body")  # moto never reads it
    assert (status, body, header) == (200, b"hello", "keep-alive")
    assert call("GET", f"/{bucket}/k")[:2] == (200, b"hello")  # parsed after the drained body
    assert conn.sock is sock  # one connection throughout
    conn.close()


def test_kept_open_connections_answer_without_waiting_for_a_delayed_ack(
    moto_endpoint: str,
) -> None:
    """A PUT and an SQS call on a kept-open connection are answered in a few ms, not in 40+ ms:
    with Nagle's algorithm on the server's socket, the second write of each reply (the body
    after the headers; the headers after "100 Continue") waited for the client's delayed ACK."""
    s3 = client("s3")
    sqs = client("sqs")
    bucket = f"nagle-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName=f"nagle-{uuid.uuid4().hex[:8]}")["QueueUrl"]

    put = median_request_seconds(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 500))
    send = median_request_seconds(lambda: sqs.send_message(QueueUrl=queue, MessageBody="x"))
    assert put < NAGLE_DELAY_SECONDS / 2, f"PutObject median {put * 1000:.1f} ms"
    assert send < NAGLE_DELAY_SECONDS / 2, f"SendMessage median {send * 1000:.1f} ms"


def test_messages_sent_while_others_are_deleted_are_never_lost(moto_endpoint: str) -> None:
    """SendMessage racing DeleteMessage on one queue: every message sent is received.

    moto's delete (and our first receipt-index one) rebuilt the message list outside the lock its
    send appends under; a message sent meanwhile vanished. Against that code this lost 70–330 of
    the 3,200 messages sent (three trials on a quiet machine; 0 with a 4,000-message backlog).
    """
    import threading

    sqs = client("sqs")
    url = sqs.create_queue(QueueName=f"race-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    # A backlog of delayed messages stays in the queue's list all along (no one receives them):
    # every delete's pass over the list is long, and the race likely.
    backlog = 10_000
    for start in range(0, backlog, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": f"b{start + i}", "DelaySeconds": 900}
                for i in range(10)
            ],
        )
    sent: set[str] = set()
    seen: set[str] = set()
    lock = threading.Lock()
    sending_done = threading.Event()
    errors: list[BaseException] = []

    def guarded(work):
        def run() -> None:
            try:
                work()
            except BaseException as err:  # noqa: BLE001 - reported by the test below
                errors.append(err)

        return run

    def sender(n: int) -> None:
        own = client("sqs")
        for start in range(0, 400, 10):
            bodies = [f"s{n}-{start + i}" for i in range(10)]
            with lock:
                sent.update(bodies)
            own.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
            )

    def consumer() -> None:
        own = client("sqs")
        while True:
            got = own.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600
            ).get("Messages", [])
            if not got:
                if sending_done.is_set():
                    return
                continue
            with lock:
                seen.update(m["Body"] for m in got)
            own.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )

    senders = [threading.Thread(target=guarded(lambda n=n: sender(n))) for n in range(8)]
    consumers = [threading.Thread(target=guarded(consumer)) for _ in range(3)]
    for t in senders + consumers:
        t.start()
    for t in senders:
        t.join()
    sending_done.set()
    for t in consumers:
        t.join()
    assert errors == []
    assert len(sent) == 3200
    assert sorted(sent - seen) == []
    assert _counts(url) == (0, 0)
    delayed = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert int(delayed) == backlog
