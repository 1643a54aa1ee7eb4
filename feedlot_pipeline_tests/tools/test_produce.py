"""``feedlot produce`` against the moto server: an SQS subscription sees what is sent."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.landing import split_message
from feedlot_pipeline.tools.produce.command import produce, publish_files
from feedlot_pipeline.tools.produce.common import iter_file
from feedlot_pipeline.tools.produce.sns import BATCH_ENTRIES, MAX_MESSAGE_BYTES, Publisher

SAMPLE_DIR = Path(__file__).parents[2] / "feedlot_pipeline" / "sample"


def rec(i: int, client_code: str = "FazendaUm", **extra: Any) -> dict:
    return {
        "id_curral": f"{10000000000000 + i:014d}",
        "id_raca": "28551700000020",
        "id_lote": f"{20000000000000 + i:014d}",
        "peso_entrada": 250.5,
        "peso_medio": 380.25,
        "data": "2024-03-18 00:00:00 UTC",
        "quantidade_animais": "40",
        "dia_confinamento": "30",
        "consumo_real": 8.4,
        "cod_cliente": client_code,
        **extra,
    }


def write_jsonl(path: Path, records: list, trailing_newline: bool = True) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""))
    return path


@pytest.fixture()
def subscribed_queue(aws) -> str:
    """An SQS queue subscribed to the test's topic with raw delivery: one SQS message per SNS."""
    _, prov = aws
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=f"producer-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns").subscribe(
        TopicArn=prov.topic_arn,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return url


def drain(url: str) -> list[dict]:
    sqs = client("sqs")
    out: list[dict] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not batch:
            return out
        out.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )


def records_in(body: str) -> list:
    """The records of a published message body (an envelope with its correlation id)."""
    records, correlation_id = split_message(body)
    assert correlation_id, body[:200]
    return records


def test_files_are_published_in_batches_per_file(tmp_path: Path, subscribed_queue: str) -> None:
    big = write_jsonl(tmp_path / "FazendaUm_20240318.json", [rec(i) for i in range(250)])
    small = write_jsonl(
        tmp_path / "FazendaDois_20240318.json",
        [rec(1000 + i, "FazendaDois") for i in range(30)] + [""],  # a blank line, then EOF
        trailing_newline=False,
    )
    result = publish_files([big, small], batch_size=100, progress=False)
    assert result.ok, result.details
    assert (result.records, result.messages, result.files) == (280, 4, 2)

    messages = drain(subscribed_queue)
    bodies = [records_in(m["Body"]) for m in messages]
    assert sorted(len(b) for b in bodies) == [30, 50, 100, 100]
    assert all(len({r["cod_cliente"] for r in b}) == 1 for b in bodies)  # no file mixing
    sent = sorted(r["id_lote"] for b in bodies for r in b)
    assert sent == sorted(rec(i)["id_lote"] for i in [*range(250), *range(1000, 1030)])
    for m in messages:
        attrs = m["MessageAttributes"]
        assert attrs["source"]["StringValue"] == "producer"
        assert attrs["correlation_id"]["StringValue"].startswith(result.run_id)
        # The body carries the same id, for deliveries that drop attributes (moto's HTTP).
        assert split_message(m["Body"])[1] == attrs["correlation_id"]["StringValue"]
    assert len({m["MessageAttributes"]["correlation_id"]["StringValue"] for m in messages}) == 4


def test_messages_and_batches_stay_under_the_sns_size_limits(
    tmp_path: Path, aws, subscribed_queue: str
) -> None:
    _, prov = aws
    padding = "x" * 30_000
    path = write_jsonl(tmp_path / "big.jsonl", [rec(i, obs=padding) for i in range(40)])

    class Recording:
        """The real client, remembering each PublishBatch's entries."""

        def __init__(self) -> None:
            self.sns = client("sns")
            self.calls: list[list[dict]] = []

        def publish_batch(self, **kwargs: Any) -> dict:
            self.calls.append(kwargs["PublishBatchRequestEntries"])
            return self.sns.publish_batch(**kwargs)

    recording = Recording()
    publisher = Publisher(prov.topic_arn, batch_size=100, sns=recording)
    publisher.publish_stream(iter_file(path))
    result = publisher.close()
    assert result.ok and result.records == 40

    for entries in recording.calls:
        assert len(entries) <= BATCH_ENTRIES
        assert sum(len(e["Message"].encode()) + 512 for e in entries) <= MAX_MESSAGE_BYTES
    bodies = [m["Body"] for m in drain(subscribed_queue)]
    assert len(bodies) == result.messages >= 5  # 40 × 30 KB cannot fit in fewer
    assert all(len(b.encode()) <= MAX_MESSAGE_BYTES - 512 for b in bodies)
    assert sum(len(records_in(b)) for b in bodies) == 40


def test_broken_line_is_reported_and_the_rest_published(
    tmp_path: Path, subscribed_queue: str
) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [rec(1), '{"id_curral": "1", broken', rec(2), "", rec(3)],
        trailing_newline=False,
    )
    result = publish_files([path], progress=False)
    assert (result.records, result.bad_lines, result.failures) == (3, 1, 1)
    assert not result.ok
    assert any(f"{path}:2" in d and "not valid JSON" in d for d in result.details)
    assert sum(len(records_in(m["Body"])) for m in drain(subscribed_queue)) == 3

    out = CliRunner().invoke(produce, [str(path), "--progress"])
    assert out.exit_code == 1
    assert f"{path}:2: skipped" in out.output
    assert "publishing" in out.output  # the progress bar (stderr, mixed in by CliRunner)
    assert "records 3, messages 1, files 1" in out.output
    assert "failures 1" in out.output


def test_publish_failures_are_reported_not_raised(tmp_path: Path, aws) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [rec(i) for i in range(25)])
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    result = publish_files([path], topic=missing, batch_size=10, progress=False)
    assert (result.records, result.failed_records, result.failed_messages) == (0, 25, 3)
    assert not result.ok
    assert any("NotFound" in d for d in result.details)

    out = CliRunner().invoke(produce, [str(path), "--topic", missing, "--no-progress"])
    assert out.exit_code == 1
    assert "failures 25" in out.output


def test_rate_is_roughly_honoured(tmp_path: Path, subscribed_queue: str) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [rec(i) for i in range(100)])
    result = publish_files([path], batch_size=10, rate=200, progress=False)
    assert result.ok and result.messages == 10
    # The 10th message may leave once the 90 records before it are due: 0.45 s at 200/s.
    assert 0.42 <= result.seconds < 3.0
    assert result.records_per_second < 1.2 * 200 * 100 / 90


def test_low_rate_makes_small_messages(tmp_path: Path, subscribed_queue: str) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [rec(i) for i in range(12)])
    result = publish_files([path], batch_size=100, rate=20, progress=False)
    assert result.ok and result.messages == 1  # 12 records fit in one 20-record message
    assert result.seconds < 0.5
    path = write_jsonl(tmp_path / "b.jsonl", [rec(i) for i in range(30)])
    result = publish_files([path], batch_size=100, rate=20, progress=False)
    assert sorted(len(records_in(m["Body"])) for m in drain(subscribed_queue)) == [10, 12, 20]
    assert 0.95 <= result.seconds < 3.0


def test_generate_publishes_synthetic_records(subscribed_queue: str) -> None:
    pytest.importorskip("feedlot_pipeline.tools.synthetic")
    out = CliRunner().invoke(produce, ["--generate", "250", "--seed", "3", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "records 250, messages 3, files 0" in out.output
    bodies = [records_in(m["Body"]) for m in drain(subscribed_queue)]
    assert sorted(len(b) for b in bodies) == [50, 100, 100]
    assert all(isinstance(r, dict) and "cod_cliente" in r for b in bodies for r in b)


def test_stdin_and_the_shipped_sample(subscribed_queue: str) -> None:
    samples = sorted(SAMPLE_DIR.glob("*.jsonl"))
    assert len(samples) == 6
    stdin_records = len(samples[0].read_text().splitlines())
    out = CliRunner().invoke(produce, ["-", "--no-progress"], input=samples[0].read_text())
    assert out.exit_code == 0, out.output
    assert f"records {stdin_records}, messages 1, files 1" in out.output
    result = publish_files(samples, progress=False)
    assert result.ok
    assert (result.files, result.messages) == (6, 6)
    assert 20 * 6 <= result.records <= 60 * 6
    bodies = [records_in(m["Body"]) for m in drain(subscribed_queue)]
    records = [r for b in bodies for r in b]
    assert len(bodies) == 7 and len(records) == stdin_records + result.records
    assert {r.get("cod_cliente") for r in records} == {"FazendaUm", "FazendaDois", "FazendaX"}


def test_unreachable_endpoint_is_one_clear_error(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feedlot_pipeline.local.services import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    path = write_jsonl(tmp_path / "a.jsonl", [rec(1)])
    out = CliRunner().invoke(produce, [str(path), "--no-progress"])
    assert out.exit_code == 1
    assert out.output.startswith("Error: cannot reach SNS at http://127.0.0.1:")


def test_files_or_generate_is_required() -> None:
    out = CliRunner().invoke(produce, [])
    assert out.exit_code == 2
    assert "FILE... or --generate N" in out.output


# --- --via api -----------------------------------------------------------------------------------

_FLAKY_SEEN: set[str] = set()


def flaky_api_handler(event: dict, context: Any) -> dict:
    """The real API handler; the first answer per idempotency key is lost (503 after landing)."""
    from feedlot_pipeline.lambdas import api_handler

    result = api_handler.handler(event, context)
    key = {k.lower(): v for k, v in event["headers"].items()}.get("idempotency-key", "")
    if key not in _FLAKY_SEEN:
        _FLAKY_SEEN.add(key)
        return {"statusCode": 503, "body": '{"message": "try again"}'}
    return result


@pytest.fixture()
def api(aws, warehouse_url, monkeypatch: pytest.MonkeyPatch):
    """The local API gateway in-process with the real handler; its URL and key exported."""
    import secrets

    from feedlot_pipeline.lambdas import common
    from feedlot_pipeline.local.api_gateway import ApiGateway

    common.reset_client_map()
    key = secrets.token_urlsafe(24)
    monkeypatch.setenv("FEEDLOT_INGEST_API_KEY", key)
    with ApiGateway(0, api_key=key) as gateway:
        monkeypatch.setenv("FEEDLOT_INGEST_API_URL", gateway.url)
        yield gateway
    common.reset_client_map()


def lake_lines(bucket: str, prefix: str = "historico_diario/") -> list[bytes]:
    s3 = client("s3")
    lines: list[bytes] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            lines += s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines()
    return lines


def test_via_api_lands_every_record(tmp_path: Path, aws, api) -> None:
    settings, prov = aws
    records = [rec(i) for i in range(45)] + [rec(100, "FazendaX")]
    path = write_jsonl(tmp_path / "a.jsonl", [*records, "not json"])
    out = CliRunner().invoke(
        produce,
        [str(path), "--via", "api", "--batch-size", "10", "--concurrency", "3", "--no-progress"],
    )
    assert out.exit_code == 1, out.output  # the bad line is reported
    assert "records 46, requests 5, files 1" in out.output
    assert "rejected by the API 1" in out.output  # FazendaX: landed under _unrouted anyway
    assert f"{path}:47: skipped" in out.output
    landed = sorted(orjson.loads(line)["id_lote"] for line in lake_lines(settings.lake_bucket))
    assert landed == sorted(r["id_lote"] for r in records)
    notices = [json.loads(m["Body"]) for m in drain(prov.queue_url)]
    assert {n["source"] for n in notices} == {"api"}
    run_ids = {n["correlation_id"].rsplit("-", 1)[0] for n in notices}
    assert len(run_ids) == 1 and len({n["correlation_id"] for n in notices}) == 5


def test_via_api_retries_lost_answers_and_lands_nothing_twice(aws, warehouse_url) -> None:
    import secrets

    from feedlot_pipeline.local.api_gateway import ApiGateway
    from feedlot_pipeline.tools.produce.command import publish_generated

    settings, _ = aws
    _FLAKY_SEEN.clear()
    key = secrets.token_urlsafe(24)
    handler = f"{__name__}:flaky_api_handler"
    with ApiGateway(0, api_key=key, handler=handler) as gateway:
        result = publish_generated(
            120,
            via="api",
            url=gateway.url,
            api_key=key,
            batch_size=25,
            concurrency=2,
            progress=False,
        )
    assert result.ok, result.details
    assert (result.records, result.messages, result.retries) == (120, 5, 5)
    assert len(result.latencies) == 5
    # Every first attempt landed and lost its answer; the retry overwrote nothing.
    assert len(lake_lines(settings.lake_bucket)) == 120


def test_via_api_refusals_are_reported_not_retried(tmp_path: Path, aws, api, monkeypatch) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [rec(i) for i in range(50)])
    monkeypatch.setenv("FEEDLOT_INGEST_API_KEY", "wrong-key-but-long-enough-1234")
    result = publish_files([path], via="api", batch_size=5, concurrency=1, progress=False)
    assert not result.ok and result.retries == 0
    # It gives up after 3 refusals in a row (requests already queued still go) and reads no more.
    assert 3 <= result.failed_messages <= 5 and result.failed_records < 50
    assert result.aborted and "HTTP 403: Forbidden" in result.aborted
    assert any("HTTP 403" in d for d in result.details)


def test_via_api_connection_errors_are_retried_then_reported(tmp_path: Path, aws) -> None:
    from feedlot_pipeline.local.services import free_port
    from feedlot_pipeline.tools.produce.api import ApiPoster
    from feedlot_pipeline.tools.produce.common import iter_file

    path = write_jsonl(tmp_path / "a.jsonl", [rec(i) for i in range(3)])
    poster = ApiPoster(
        f"http://127.0.0.1:{free_port()}",
        "k" * 24,
        batch_size=1,
        concurrency=1,
        backoff=0.01,
        retry_for=0,
    )
    poster.publish_stream(iter_file(path))
    result = poster.close()
    assert (result.records, result.failed_records) == (0, 3)
    assert result.retries == 3 * 4  # five attempts per request
    assert "ConnectionError" in result.details[0]


def test_via_api_needs_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDLOT_INGEST_API_URL", raising=False)
    path = write_jsonl(tmp_path / "a.jsonl", [rec(1)])
    out = CliRunner().invoke(produce, [str(path), "--via", "api"])
    assert out.exit_code == 1
    assert "FEEDLOT_INGEST_API_URL is not set" in out.output


# --- --via firehose ------------------------------------------------------------------------------


@pytest.fixture()
def firehose_stream(aws, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A DirectPut delivery stream into the landing bucket's input prefix: (stream, prefix)."""
    settings, _ = aws
    name = f"{settings.landing_bucket}-firehose"
    prefix = "incoming/firehose/"  # as the local stack provisions it
    client("firehose").create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/feedlot-firehose",
            "BucketARN": f"arn:aws:s3:::{settings.landing_bucket}",
            "Prefix": prefix,
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
        },
    )
    monkeypatch.setenv("FEEDLOT_FIREHOSE_STREAM", name)
    return name, prefix


def test_via_firehose_delivers_json_lines_to_s3(tmp_path: Path, aws, firehose_stream) -> None:
    settings, _ = aws
    _, prefix = firehose_stream
    records = [rec(i) for i in range(1200)]
    path = write_jsonl(tmp_path / "a.jsonl", records)
    out = CliRunner().invoke(produce, [str(path), "--via", "firehose", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "records 1200, batches 3, files 1" in out.output
    s3 = client("s3")
    objects = s3.list_objects_v2(Bucket=settings.landing_bucket, Prefix=prefix)["Contents"]
    assert len(objects) == 3  # moto delivers each PutRecordBatch as one object
    bodies = [
        s3.get_object(Bucket=settings.landing_bucket, Key=o["Key"])["Body"].read() for o in objects
    ]
    assert all(b.endswith(b"\n") for b in bodies)
    lines = [line for b in bodies for line in b.splitlines()]
    assert sorted(orjson.loads(line)["id_lote"] for line in lines) == sorted(
        r["id_lote"] for r in records
    )


def test_firehose_batches_respect_limits_and_failed_entries_are_retried(
    tmp_path: Path, aws, firehose_stream
) -> None:
    from feedlot_pipeline.tools.produce.firehose import (
        FIREHOSE_MAX_BATCH_BYTES,
        FIREHOSE_MAX_RECORDS,
        FirehoseWriter,
    )

    settings, _ = aws
    stream, prefix = firehose_stream

    class Flaky:
        """The real client; the first call reports every other entry as failed (not sent)."""

        def __init__(self) -> None:
            self.real = client("firehose")
            self.calls: list[list[bytes]] = []

        def put_record_batch(self, DeliveryStreamName: str, Records: list[dict]) -> dict:  # noqa: N803
            self.calls.append([r["Data"] for r in Records])
            if len(self.calls) > 1:
                return self.real.put_record_batch(
                    DeliveryStreamName=DeliveryStreamName, Records=Records
                )
            keep = Records[::2]
            sent = self.real.put_record_batch(DeliveryStreamName=DeliveryStreamName, Records=keep)
            answers: list[dict] = []
            ok = iter(sent["RequestResponses"])
            for i in range(len(Records)):
                answers.append(
                    next(ok)
                    if i % 2 == 0
                    else {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
                )
            return {"FailedPutCount": len(Records) // 2, "RequestResponses": answers}

    padding = "x" * 20_000
    path = write_jsonl(tmp_path / "big.jsonl", [rec(i, obs=padding) for i in range(300)])
    flaky = Flaky()
    writer = FirehoseWriter(stream, firehose=flaky, backoff=0.01)
    writer.publish_stream(iter_file(path))
    result = writer.close()
    assert result.ok and result.records == 300 and result.retries == 1
    for batch in flaky.calls:
        assert len(batch) <= FIREHOSE_MAX_RECORDS
        assert sum(len(d) for d in batch) <= FIREHOSE_MAX_BATCH_BYTES
        assert all(d.endswith(b"\n") and d.count(b"\n") == 1 for d in batch)
    assert len(flaky.calls[1]) == len(flaky.calls[0]) // 2  # only the failed entries again
    lines = lake_lines(settings.landing_bucket, prefix)
    assert sorted(orjson.loads(line)["id_lote"] for line in lines) == sorted(
        rec(i)["id_lote"] for i in range(300)
    )


# --- outages -------------------------------------------------------------------------------------


def _journaled_moto(port: int, journal: Path, queue: str, log: Path) -> Any:
    """moto as the stack runs it: the lake journal keeps ``queue`` across a kill."""
    import subprocess
    import sys

    from feedlot_pipeline.local.services import wait_for_port

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedlot_pipeline.local.moto_server", "-p", str(port)]
            + ["--journal", str(journal), "--durable-queue", queue],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, 60, proc, "moto")
    return proc


def _topic_to_queue(queue: str) -> tuple[str, str]:
    """The records topic and a raw-delivery subscription into ``queue`` (what `local up` redoes)."""
    sqs, sns = client("sqs"), client("sns")
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name="outage-records")["TopicArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return topic, url


def test_produce_rides_through_a_moto_kill_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto SIGKILLed mid-produce, down ~4 s, restarted and provisioned again: every record is
    published, the outage is reported, and nothing SNS answered is sent again."""
    import os
    import signal
    import threading
    import time

    from feedlot_pipeline.local.services import free_port

    port, queue = free_port(), "outage-inbox"
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        monkeypatch.setenv(key, value)
    journal, log = tmp_path / "journal", tmp_path / "moto.log"
    procs = [_journaled_moto(port, journal, queue, log)]
    killer: threading.Thread | None = None
    try:
        topic, url = _topic_to_queue(queue)
        said: list[str] = []

        def outage() -> None:
            time.sleep(1.5)
            os.killpg(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            time.sleep(4)
            procs.append(_journaled_moto(port, journal, queue, log))
            _topic_to_queue(queue)

        records = [rec(i) for i in range(3000)]
        path = write_jsonl(tmp_path / "a.jsonl", records)
        killer = threading.Thread(target=outage)
        killer.start()
        publisher = Publisher(topic, batch_size=10, rate=1000, retry_for=60, say=said.append)
        publisher.publish_stream(iter_file(path))
        result = publisher.close()
        killer.join()
        assert result.ok, result.details
        assert result.records == 3000 and result.outages >= 1 and result.retries >= 1
        assert result.outage_seconds > 1  # from its first failed call to the first answer after
        assert any("failing" in s for s in said) and any("back after" in s for s in said)
        got = [r["id_lote"] for m in drain(url) for r in json.loads(m["Body"])["records"]]
        assert set(got) == {r["id_lote"] for r in records}  # none lost
        # Only a batch whose answer was lost may arrive twice; counted as such.
        assert len(got) - len(set(got)) <= 10 * result.maybe_twice
    finally:
        if killer is not None:
            killer.join()  # it may still restart moto: wait, then stop every one
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
