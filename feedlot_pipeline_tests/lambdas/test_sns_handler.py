"""The SNS Lambda handler with AWS-shaped events, against moto and a real warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.ingestion.landing import envelope
from feedlot_pipeline.lambdas import sns_handler
from feedlot_pipeline.local.lambda_bridge import LambdaBridge
from feedlot_pipeline.tools.produce.sns import Publisher
from feedlot_pipeline_tests.helpers import Context, receive_all, record, sns_event


def test_batch_message_lands_per_partition_with_correlation_id(aws, warehouse_url) -> None:
    settings, prov = aws
    batch = [record(lote="1"), record(lote="2"), record("FazendaDois", lote="3")]
    event = sns_event(json.dumps(batch), "msg-a", correlation_id="corr-42")
    result = sns_handler.handler(event, Context())
    assert sorted(result["landed"]) == [
        "historico_diario/fazenda_dois/2023/01/01/sns-msg-a.jsonl",
        "historico_diario/fazenda_um/2023/01/01/sns-msg-a.jsonl",
    ]
    head = client("s3").head_object(Bucket=settings.lake_bucket, Key=result["landed"][1])
    assert head["Metadata"]["correlation-id"] == "corr-42"
    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert {n.correlation_id for n in notices} == {"corr-42"}
    assert sum(n.records for n in notices) == 3


@pytest.mark.parametrize("attributes", ["absent", None, {}, {"correlation_id": {"Type": "String"}}])
def test_correlation_id_defaults_to_the_message_id(aws, warehouse_url, attributes) -> None:
    _, prov = aws
    event = sns_event(json.dumps([record()]), "msg-no-attr")
    if attributes == "absent":
        del event["Records"][0]["Sns"]["MessageAttributes"]
    else:
        event["Records"][0]["Sns"]["MessageAttributes"] = attributes
    assert sns_handler.handler(event, Context())["landed"]
    (notice,) = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert notice.correlation_id == "msg-no-attr"


def test_original_case_line_format_is_accepted(aws, warehouse_url) -> None:
    settings, _ = aws
    lines = "\n".join(json.dumps(record(lote=str(i))) for i in range(3))
    result = sns_handler.handler(sns_event(lines, "jsonl"), Context())
    (key,) = result["landed"]
    body = client("s3").get_object(Bucket=settings.lake_bucket, Key=key)["Body"].read()
    assert len(body.splitlines()) == 3
    assert orjson.loads(body.splitlines()[0])["id_curral"] == "25994051003275"


def test_unparseable_message_is_landed_not_lost(aws, warehouse_url) -> None:
    settings, _ = aws
    result = sns_handler.handler(sns_event("this is not json", "bad"), Context())
    (key,) = result["landed"]
    assert key.startswith("historico_diario/_unrouted/")


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": "x"},
        {"Records": [{"EventSource": "aws:sqs", "Sns": {}}]},
        {"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m"}}]},
        {"Records": ["not a record"]},
    ],
)
def test_invalid_envelope_raises(event, aws, warehouse_url) -> None:
    with pytest.raises(sns_handler.InvalidEvent):
        sns_handler.handler(event, Context())


def test_aws_failure_raises_so_lambda_retries(aws, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        sns_handler.handler(sns_event(json.dumps([record()])), Context())


def test_client_added_in_warehouse_is_routed(aws, warehouse_url) -> None:
    from feedlot_pipeline.warehouse.store import Warehouse

    wh = Warehouse(warehouse_url)
    wh.add_client("FazendaTres", "fazenda_tres")
    wh.dispose()
    result = sns_handler.handler(sns_event(json.dumps([record("FazendaTres")])), Context())
    assert result["landed"][0].startswith("historico_diario/fazenda_tres/2023/01/01/")


def test_correlation_id_of_the_envelope_when_attributes_are_dropped(aws, warehouse_url) -> None:
    _, prov = aws
    body = envelope([orjson.dumps(record(lote="1"))], "trace-env").decode()
    event = sns_event(body, "msg-env")
    event["Records"][0]["Sns"]["MessageAttributes"] = {}  # as moto's HTTP delivery sends it
    assert sns_handler.handler(event, Context())["landed"]
    # The attribute, when it arrives, wins over the body's copy.
    event = sns_event(body, "msg-env-attr", correlation_id="trace-attr")
    assert sns_handler.handler(event, Context())["landed"]
    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    by_event = {n.event_id: n for n in notices}
    assert by_event["msg-env"].correlation_id == "trace-env"
    assert by_event["msg-env"].records == 1  # the envelope is not landed as a record
    assert by_event["msg-env-attr"].correlation_id == "trace-attr"


def test_producer_correlation_id_survives_moto_http_delivery(
    aws, warehouse_url, tmp_path: Path
) -> None:
    """`feedlot produce` → moto SNS → HTTP → Lambda bridge → real handler: moto drops the
    message attributes on the way, the landed object still carries the producer's id."""
    settings, prov = aws
    bridge = LambdaBridge(
        tmp_path, 0, handler="feedlot_pipeline.lambdas.sns_handler:handler", retry_seconds=(0.2,)
    ).start()
    try:
        client("sns").subscribe(TopicArn=prov.topic_arn, Protocol="http", Endpoint=bridge.endpoint)
        publisher = Publisher(prov.topic_arn, batch_size=10)
        publisher.publish_stream(orjson.dumps(record(lote=str(i))) for i in range(3))
        result = publisher.close()
        assert result.ok and result.messages == 1
        assert bridge.invoker.wait_idle(30)
        assert bridge.invoker.counts()["succeeded"] == 1
    finally:
        bridge.stop(drain_seconds=5)
    (notice,) = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert notice.correlation_id == f"{result.run_id}-000001" != notice.event_id
    head = client("s3").head_object(Bucket=settings.lake_bucket, Key=notice.key)
    assert head["Metadata"]["correlation-id"] == notice.correlation_id
