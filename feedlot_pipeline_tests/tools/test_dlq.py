"""``feedlot dlq list | show | redrive`` against real queues on the moto server."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.failures import report_failure
from feedlot_pipeline.tools.cli import main
from feedlot_pipeline_tests.helpers import land, record, tick


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["dlq", *args], catch_exceptions=False)


def depth(url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def dead_letter(url: str, body: str, reason: str) -> str:
    """A message as the sensor's _to_dlq writes it."""
    return client("sqs").send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": reason},
            "stage": {"DataType": "String", "StringValue": "consumption_events_sensor"},
            "original_message_id": {"DataType": "String", "StringValue": "orig-1"},
        },
    )["MessageId"]


@pytest.fixture()
def dlq_with_two(aws):
    settings, prov = aws
    a = dead_letter(prov.dlq_url, '{"type": "raw_landing", "version": 7}', "unsupported version 7")
    b = dead_letter(prov.dlq_url, "{not json", "notice is not JSON: unexpected character")
    return settings, prov, a, b


def test_list_shows_reasons_and_consumes_nothing(dlq_with_two) -> None:
    _, prov, a, b = dlq_with_two
    result = run("list")
    assert result.exit_code == 0, result.output
    assert "2 message(s)" in result.output
    assert a in result.output and b in result.output
    assert "unsupported version 7" in result.output
    assert "notice is not JSON" in result.output
    assert "consumption_events_sensor" in result.output
    assert "{not json" in result.output  # the preview
    assert depth(prov.dlq_url) == (2, 0)  # visible again at once, nothing deleted

    rows = [json.loads(line) for line in run("list", "--json").output.splitlines()]
    assert {r["id"] for r in rows} == {a, b}
    assert all(r["receive_count"] >= 1 for r in rows)  # peeking counts as a receive
    assert depth(prov.dlq_url) == (2, 0)


def test_show_prints_one_message_in_full(dlq_with_two) -> None:
    _, prov, a, _ = dlq_with_two
    result = run("show", a)
    assert result.exit_code == 0, result.output
    assert f"id:             {a}" in result.output
    assert "attribute reason: unsupported version 7" in result.output
    assert "attribute original_message_id: orig-1" in result.output
    assert '"version": 7' in result.output  # pretty-printed body
    assert depth(prov.dlq_url) == (2, 0)

    missing = CliRunner().invoke(main, ["dlq", "show", "no-such-id"])
    assert missing.exit_code == 1
    assert "no message no-such-id" in missing.output


def test_redrive_one_id_moves_only_that_message(dlq_with_two) -> None:
    _, prov, a, b = dlq_with_two
    dry = run("redrive", a, "--dry-run")
    assert "dry run: 1 message(s) would move" in dry.output
    assert depth(prov.dlq_url) == (2, 0) and depth(prov.queue_url) == (0, 0)

    result = run("redrive", a)
    assert result.exit_code == 0, result.output
    assert "1 moved, 0 failed, 0 duplicated, 0 not found" in result.output
    assert depth(prov.dlq_url) == (1, 0)
    (moved,) = client("sqs").receive_message(
        QueueUrl=prov.queue_url, MessageAttributeNames=["All"]
    )["Messages"]
    assert moved["Body"] == '{"type": "raw_landing", "version": 7}'
    attrs = moved["MessageAttributes"]
    assert attrs["dlq_message_id"]["StringValue"] == a
    assert "reason" not in attrs  # the old failure does not travel with the retry
    assert run("list", "--json").output.count(b) == 1


def test_redrive_all_and_unknown_ids(dlq_with_two) -> None:
    _, prov, _, _ = dlq_with_two
    unknown = CliRunner().invoke(main, ["dlq", "redrive", "nope"])
    assert unknown.exit_code == 1
    assert "not found" in unknown.output
    assert depth(prov.dlq_url) == (2, 0)
    assert CliRunner().invoke(main, ["dlq", "redrive"]).exit_code == 2  # IDs or --all

    result = run("redrive", "--all")
    assert "2 moved" in result.output
    assert depth(prov.dlq_url) == (0, 0)
    assert depth(prov.queue_url) == (2, 0)


def test_redriven_notice_is_processed_by_the_sensor(aws) -> None:
    """A good notice parked in the DLQ (e.g. after maxReceiveCount) runs once redriven."""
    settings, prov = aws
    sqs = client("sqs")
    land(settings, "late", [record()])
    (notice,) = sqs.receive_message(QueueUrl=prov.queue_url)["Messages"]
    sqs.send_message(QueueUrl=prov.dlq_url, MessageBody=notice["Body"])  # what SQS's redrive does
    sqs.delete_message(QueueUrl=prov.queue_url, ReceiptHandle=notice["ReceiptHandle"])

    assert "1 moved" in run("redrive", "--all").output
    with dg.instance_for_test() as instance:
        result = tick(instance, settings)
    (request,) = result.run_requests
    assert list(request.run_config["ops"]["load_noticed_objects"]["config"]["objects"]) == [
        "2023-01-01|fazenda_um"
    ]
    assert depth(prov.dlq_url) == (0, 0)


def test_failures_inbox_lists_documents_by_their_reason(failures_aws) -> None:  # noqa: F811
    _, prov = failures_aws
    report_failure(source="sensor", stage="parse", reason="bad shape", payload="x", event_id="e9")
    result = run("list", "--queue", prov.failures_inbox_url)
    assert result.exit_code == 0, result.output
    assert "1 message(s)" in result.output
    assert "bad shape" in result.output and "parse" in result.output
    (row,) = [
        json.loads(x)
        for x in run("list", "--queue", prov.failures_inbox_url, "--json").output.splitlines()
    ]
    shown = run("show", "--queue", prov.failures_inbox_url, row["id"])
    assert '"event_id": "e9"' in shown.output
    assert "payload (parsed):" in shown.output


def test_missing_queue_is_a_clear_error(moto_endpoint: str) -> None:
    result = CliRunner().invoke(main, ["dlq", "list", "--queue", "no-such-queue-xyz"])
    assert result.exit_code == 1
    assert "queue 'no-such-queue-xyz' does not exist" in result.output


def test_reland_lands_a_failed_lambda_event_once_and_leaves_other_documents(
    failures_aws,  # noqa: F811
    warehouse_url: str,
    tmp_path,
) -> None:
    """A landing Lambda that gave up (warehouse down, lake unreachable…) left its event in a
    failure document; ``feedlot dlq reland --all`` lands its records through the same handler,
    deletes only that document, and a second run lands nothing twice. A truncated document is
    landed from the local failure record it names."""
    from feedlot_pipeline_tests.helpers import sns_event

    settings, prov = failures_aws
    batch = [record(lote="1"), record(lote="2"), record("FazendaDois", lote="3")]
    event = sns_event(json.dumps(batch), "msg-failed", correlation_id="corr-7")
    report_failure(
        source="feedlot-sns-landing",
        stage="lambda",
        reason="RetriesExhausted: OperationalError: connection refused",
        payload=event,
        event_id="msg-failed",
    )
    big = sns_event(json.dumps([record(lote="9")]), "msg-truncated")
    failure_record = tmp_path / "failure.json"
    failure_record.write_text(json.dumps({"requestPayload": big}))
    report_failure(
        source="feedlot-sns-landing",
        stage="lambda",
        reason="RetriesExhausted: boom",
        payload="x" * (300 * 1024),  # truncated to fit SNS
        event_id="msg-truncated",
        details={"failure_record": str(failure_record)},
    )
    report_failure(
        source="consumption_events_sensor",
        stage="sensor",
        reason="not a notice",
        payload="garbage",
        event_id=None,
    )
    assert depth(prov.failures_inbox_url) == (3, 0)

    out = run("reland", "--all")
    assert out.exit_code == 0, out.output
    assert "2 landed, 0 failed, 1 other document(s) left in place" in out.output
    keys = {
        o["Key"]
        for o in client("s3").list_objects_v2(Bucket=settings.lake_bucket)["Contents"]
        if "msg-" in o["Key"]
    }
    assert keys == {
        "historico_diario/fazenda_um/2023/01/01/sns-msg-failed.jsonl",
        "historico_diario/fazenda_dois/2023/01/01/sns-msg-failed.jsonl",
        "historico_diario/fazenda_um/2023/01/01/sns-msg-truncated.jsonl",
    }
    assert depth(prov.failures_inbox_url) == (1, 0)  # the sensor's document stays

    out = run("reland", "--all")
    assert "0 landed, 0 failed, 1 other document(s) left in place" in out.output


def test_no_aws_credentials_is_a_clear_error_with_what_to_do(tmp_path) -> None:
    """Without the local stack's variables (or AWS credentials) a command says how to get them,
    instead of a botocore traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FEEDLOT_")) and k != "DAGSTER_HOME"
    }
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # never reached: signing fails first
    )
    feedlot = Path(sys.executable).with_name("feedlot")
    done = subprocess.run(
        [str(feedlot), "dlq", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Unable to locate credentials" in done.stderr
    assert 'eval "$(feedlot local env)"' in done.stderr
    assert "Traceback" not in done.stderr
