"""The API Gateway Lambda handler with REST proxy events, against moto and a real warehouse."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

import dagster as dg
import orjson
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.ingestion.partitions import farms_partitions
from feedlot_pipeline.lambdas import api_handler
from feedlot_pipeline_tests.helpers import mat_metadata, materialize, receive_all, record

DAY = date(2023, 1, 1)


class Context:
    aws_request_id = "lambda-req-1"
    function_name = "feedlot-api-landing"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:feedlot-api-landing"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def api_event(
    body: str | bytes | None,
    *,
    method: str = "POST",
    path: str = "/consumo",
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
    request_id: str | None = None,
) -> dict:
    """A REST API (payload 1.0) proxy event as API Gateway sends it."""
    if isinstance(body, bytes) or base64_body:
        raw = body if isinstance(body, bytes) else (body or "").encode()
        body, encoded = base64.b64encode(raw).decode(), True
    else:
        encoded = False
    hdrs = {"Content-Type": "application/json", "x-api-key": "k" * 24, **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": request_id or str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "apiKey": "k" * 24},
            "apiId": "abc123",
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def call(event: dict) -> tuple[int, dict, dict]:
    result = api_handler.handler(event, Context())
    assert result["isBase64Encoded"] is False
    return result["statusCode"], json.loads(result["body"]), result["headers"]


def mixed_batch() -> list[Any]:
    return [
        record(lote="1"),  # 0 ok
        record("FazendaDois", lote="2"),  # 1 ok, other farm
        record(lote="1"),  # 2 duplicate of 0
        {**record(lote="3"), "peso_medio": -5},  # 3 non_positive, lands in fazenda_um
        record("FazendaX", lote="4"),  # 4 unknown client → _unrouted
        {**record(lote="5"), "data": "01/01/2023"},  # 5 bad date → _unrouted (landing day)
        "not a record",  # 6 not an object → _unrouted
        {**record(lote="6"), "quantidade_animais": "12", "peso_entrada": "200.5"},  # 7 ok
    ]


def test_one_object_lands_like_sns_with_the_correlation_id(aws, warehouse_url) -> None:
    settings, prov = aws
    event = api_event(json.dumps(record()), headers={"X-Correlation-Id": "corr-7"})
    status, body, headers = call(event)
    request_id = event["requestContext"]["requestId"]
    assert status == 202
    assert (body["received"], body["accepted"], body["rejected"]) == (1, 1, 0)
    assert body["landed"] == [f"historico_diario/fazenda_um/2023/01/01/api-{request_id}.jsonl"]
    assert body["correlationId"] == headers["x-correlation-id"] == "corr-7"
    assert body["requestId"] == request_id and body["rejections"] == []
    s3 = client("s3")
    head = s3.head_object(Bucket=settings.lake_bucket, Key=body["landed"][0])
    assert head["Metadata"]["correlation-id"] == "corr-7"
    assert head["Metadata"]["source"] == "api"
    line = s3.get_object(Bucket=settings.lake_bucket, Key=body["landed"][0])["Body"].read()
    assert orjson.loads(line) == record()  # landed exactly as received
    (notice,) = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert (notice.source, notice.correlation_id, notice.records) == ("api", "corr-7", 1)


def test_headers_only_in_multi_value_headers_count(aws, warehouse_url) -> None:
    event = api_event(json.dumps(record()))
    event["headers"] = None
    event["multiValueHeaders"]["X-CORRELATION-ID"] = ["first", "corr-multi"]
    status, body, headers = call(event)
    assert status == 202
    assert body["correlationId"] == headers["x-correlation-id"] == "corr-multi"


def test_correlation_id_defaults_to_the_request_id(aws, warehouse_url) -> None:
    event = api_event(json.dumps([record()]))
    status, body, headers = call(event)
    assert status == 202
    assert body["correlationId"] == event["requestContext"]["requestId"]
    assert headers["x-correlation-id"] == body["correlationId"]


def test_mixed_batch_lands_everything_and_reconciles_in_the_warehouse(aws, warehouse_url) -> None:
    settings, prov = aws
    batch = mixed_batch()
    status, body, _ = call(api_event(json.dumps(batch), base64_body=True))
    assert status == 202
    # Record 2 repeats record 0: accepted (unchanged in the warehouse), never a rejection.
    assert (body["received"], body["accepted"], body["rejected"]) == (8, 4, 4)
    codes = {r["index"]: r["code"] for r in body["rejections"]}
    assert codes == {
        3: "non_positive",
        4: "unknown_client",
        5: "invalid_data",
        6: "not_an_object",
    }
    assert all(r["reason"] for r in body["rejections"])
    today = datetime.now(timezone.utc).date()
    farms = {tuple(k.split("/")[1:5]) for k in body["landed"]}
    assert farms == {
        ("fazenda_um", "2023", "01", "01"),
        ("fazenda_dois", "2023", "01", "01"),
        ("_unrouted", "2023", "01", "01"),
        ("_unrouted", f"{today:%Y}", f"{today:%m}", f"{today:%d}"),
    }
    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert sum(n.records for n in notices) == len(batch)  # rejected records are landed too

    # The real asset path, per landed partition: landed = loaded + rejected, and the API's
    # answer matches what the warehouse did.
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(
            farms_partitions.name, ["fazenda_um", "fazenda_dois", "_unrouted"]
        )
        totals: Counter[str] = Counter()
        by_code: Counter[str] = Counter()
        for notice in notices:
            day = date.fromisoformat(notice.dia)
            result = materialize(instance, settings, warehouse_url, notice.fazenda, day)
            assert result.success
            meta = mat_metadata(result)
            assert meta["landed"] == meta["loaded"] + meta["rejected"]
            totals.update({k: meta[k] for k in ("landed", "loaded", "rejected")})
            by_code.update(meta["rejected_by_reason"])
    assert totals == {"landed": 8, "loaded": 4, "rejected": 4}
    assert by_code == Counter(codes.values())


@pytest.mark.parametrize(
    ("body", "b64", "message"),
    [
        ("this is not json", False, "not valid JSON"),
        ('{"a": 1', False, "not valid JSON"),
        ("[NaN]", False, "not valid JSON"),
        ('{"peso_medio": Infinity}', False, "not valid JSON"),
        ("[" * 5000 + "]" * 5000, False, "not valid JSON"),  # nesting beyond orjson's 1024
        ('[{"obs": ' + "[" * 300 + "]" * 300 + "}]", False, "nested too deeply"),
        ("42", False, "JSON object or array, not int"),
        ('"text"', False, "JSON object or array, not str"),
        ("null", False, "JSON object or array, not NoneType"),
        ("[]", False, "empty array"),
        ("", False, "empty body"),
        (None, False, "empty body"),
        (b"\xff\xfe[{}]", True, "not valid UTF-8"),
        ('[{"cod_cliente": "\ud800"}]', False, "UTF-8"),
    ],
)
def test_malformed_bodies_are_400(body, b64, message, aws, warehouse_url) -> None:
    settings, prov = aws
    status, answer, _ = call(api_event(body, base64_body=b64))
    assert status == 400
    assert message in answer["message"]
    assert receive_all(prov.queue_url) == []  # nothing landed
    assert client("s3").list_objects_v2(Bucket=settings.lake_bucket)["KeyCount"] == 0


def test_bad_base64_and_bad_headers_are_400(aws, warehouse_url) -> None:
    event = api_event("x")
    event["body"], event["isBase64Encoded"] = "%%%not-base64", True
    assert call(event)[0] == 400
    for name in ("x-correlation-id", "idempotency-key"):
        for value in ("a" * 129, "semi;colon", "ação"):
            status, answer, _ = call(api_event(json.dumps(record()), headers={name: value}))
            assert status == 400 and name in answer["message"]


def test_body_over_the_limit_is_413(aws, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_INGEST_API_MAX_BODY_BYTES", "2000")
    small = json.dumps([record(lote=str(i)) for i in range(3)])
    big = json.dumps([record(lote=str(i)) for i in range(20)])
    assert len(small) < 2000 < len(big)
    assert call(api_event(small))[0] == 202
    for b64 in (False, True):
        status, answer, _ = call(api_event(big, base64_body=b64))
        assert status == 413 and "2000 bytes" in answer["message"]
    # Multi-byte characters: the limit is in bytes, not characters.
    wide = json.dumps({**record(), "obs": "é" * 1200}, ensure_ascii=False)
    assert len(wide) < 2000 < len(wide.encode())
    assert call(api_event(wide))[0] == 413


def test_too_many_records_in_one_body_is_413_before_any_landing(aws, monkeypatch) -> None:
    """A 1 MiB body of empty objects is 349,525 records: refused whole, nothing landed."""
    settings, prov = aws
    empties = "[" + ",".join(["{}"] * 349_525) + "]"
    assert len(empties) <= 1024 * 1024
    status, answer, _ = call(api_event(empties))
    assert status == 413 and "at most 5000" in answer["message"]
    monkeypatch.setenv("FEEDLOT_INGEST_API_MAX_RECORDS", "3")
    assert call(api_event(json.dumps([record(lote=str(i)) for i in range(4)])))[0] == 413
    assert receive_all(prov.queue_url) == []  # nothing was landed or announced


def test_default_limit_is_one_mib(aws, warehouse_url) -> None:
    assert api_handler.max_body_bytes() == 1024 * 1024


def test_other_routes_and_methods(aws, warehouse_url) -> None:
    status, answer, _ = call(api_event("{}", path="/other"))
    assert status == 404 and "/consumo" in answer["message"]
    status, answer, headers = call(api_event(None, method="GET"))
    assert status == 405 and headers["Allow"] == "POST"


def test_landing_failure_is_503_and_acknowledges_nothing(aws, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    status, answer, headers = call(api_event(json.dumps(record())))
    assert status == 503
    assert "retry" in answer["message"] and headers["Retry-After"] == "1"


def test_idempotency_key_lands_a_retry_once(aws, warehouse_url) -> None:
    settings, prov = aws
    body = json.dumps([record(lote="1"), record(lote="2")])
    first = call(api_event(body, headers={"Idempotency-Key": "batch-0001"}))[1]
    again = call(api_event(body, headers={"Idempotency-Key": "batch-0001"}))[1]
    other = call(
        api_event(json.dumps([record(lote="3")]), headers={"Idempotency-Key": "batch-0001"})
    )[1]
    assert first["landed"] == again["landed"]
    assert other["landed"] != first["landed"]  # same key, other body: landed separately
    keys = [o["Key"] for o in client("s3").list_objects_v2(Bucket=settings.lake_bucket)["Contents"]]
    assert len(keys) == 2


def test_not_an_api_gateway_event_raises(aws, warehouse_url) -> None:
    with pytest.raises(api_handler.InvalidEvent):
        api_handler.handler({"Records": []}, Context())
    event = api_event("{}")
    del event["httpMethod"]  # an HTTP API (payload 2.0) event is a wiring error here
    with pytest.raises(api_handler.InvalidEvent):
        api_handler.handler(event, Context())
    for broken in ([], None, {"requestContext": {"requestId": ""}, "httpMethod": "POST"}):
        with pytest.raises(api_handler.InvalidEvent):
            api_handler.handler(broken, Context())
    event = api_event(None)
    event["body"] = {"not": "a string"}
    with pytest.raises(api_handler.InvalidEvent):
        api_handler.handler(event, Context())
