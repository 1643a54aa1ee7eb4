"""The SNS Lambda handler with AWS-shaped events, against moto and a real warehouse."""

from __future__ import annotations

import json

import orjson
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.lambdas import sns_handler
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
