"""The landing Lambdas' metrics: EMF lines on stdout (what CloudWatch Logs extracts in AWS Lambda),
and, outside the Lambda runtime, the same values in the moto server's CloudWatch (PutMetricData
by the EMF mirror), read back. Each test has its own namespace (``metrics_ns``).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest

from feedlot_pipeline.core.emf import emf_mirror
from feedlot_pipeline.lambdas import api_handler, common, sns_handler
from feedlot_pipeline_tests.helpers import (
    Context,
    Drops,
    jsonl,
    make_drops,
    metric_names,
    metric_stats,
    record,
    sns_event,
)
from feedlot_pipeline_tests.lambdas.test_api_handler import api_event, call, mixed_batch


def emf_lines(out: str) -> list[dict]:
    """The EMF documents among the JSON lines a handler printed."""
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [d for d in docs if "_aws" in d]


def value(doc: dict, name: str) -> float:
    """A metric's value in an EMF document (Powertools writes a list of the values added)."""
    found = doc[name]
    return sum(found) if isinstance(found, list) else found


class Records(logging.Handler):
    """The log records of a Powertools logger (its own stream handler was bound at import time,
    before pytest's capture of this test)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))  # as the Lambda would print it


def sent(namespace: str, name: str, source: str) -> dict[str, float] | None:
    assert emf_mirror.flush(10)
    return metric_stats(namespace, name, Source=source)


def test_sns_landing_emits_emf_and_reaches_cloudwatch(
    aws, warehouse_url, metrics_ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    published = datetime.now(timezone.utc) - timedelta(seconds=3)
    event = sns_event(json.dumps([record(lote="1"), record("FazendaDois", lote="2"), "junk"]))
    event["Records"][0]["Sns"]["Timestamp"] = published.isoformat().replace("+00:00", "Z")
    sns_handler.handler(event, Context())

    (doc,) = emf_lines(capsys.readouterr().out)
    (directive,) = doc["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == metrics_ns
    assert directive["Dimensions"] == [["Source"]]  # no service dimension
    assert doc["Source"] == "sns"
    assert (value(doc, "RecordsReceived"), value(doc, "RecordsLanded")) == (3, 3)  # junk too
    assert 3000 <= value(doc, "LandingLatency") < 60_000
    assert "RecordsRejected" not in doc  # the SNS path does not judge records

    assert sent(metrics_ns, "RecordsLanded", "sns")["Sum"] == 3
    assert 3000 <= sent(metrics_ns, "LandingLatency", "sns")["Maximum"] < 60_000


def test_sns_failure_counts_and_still_raises(
    aws, warehouse_url, metrics_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        sns_handler.handler(sns_event(json.dumps(record())), Context())
    assert sent(metrics_ns, "LandingFailures", "sns")["Sum"] == 1
    assert sent(metrics_ns, "RecordsReceived", "sns")["Sum"] == 1


def test_api_counts_rejections_refusals_and_logs_rejections_by_reason(
    aws, warehouse_url, metrics_ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    records = Records(api_handler.logger.registered_formatter)
    api_handler.logger.addHandler(records)
    try:
        status, body, _ = call(api_event(json.dumps(mixed_batch())))
    finally:
        api_handler.logger.removeHandler(records)
    assert status == 202
    assert call(api_event(None, method="GET"))[0] == 405
    assert call(api_event("[]"))[0] == 400
    out = capsys.readouterr().out

    first, refused_405, refused_400 = emf_lines(out)
    counts = [value(first, n) for n in ("RecordsReceived", "RecordsLanded", "RecordsRejected")]
    assert counts == [8, 8, 4]  # the repeated record is no rejection
    assert value(refused_405, "RequestsRefused") == value(refused_400, "RequestsRefused") == 1
    assert "RecordsReceived" not in refused_405

    lines = [r for r in records.lines if r["message"] == "rejections"]
    by_code = {r["reason_code"]: r["count"] for r in lines}
    expected: dict[str, int] = {}
    for rejection in body["rejections"]:
        expected[rejection["code"]] = expected.get(rejection["code"], 0) + 1
    assert by_code == expected and sum(by_code.values()) == 4
    assert all(r["correlation_id"] == body["correlationId"] for r in lines)

    assert sent(metrics_ns, "RecordsRejected", "api")["Sum"] == 4
    assert sent(metrics_ns, "RequestsRefused", "api") == {
        "Sum": 2.0,
        "SampleCount": 2.0,
        "Minimum": 1.0,
        "Maximum": 1.0,
    }
    assert sent(metrics_ns, "LandingLatency", "api")["SampleCount"] == 1


def test_api_503_is_a_landing_failure(
    aws, warehouse_url, metrics_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    assert call(api_event(json.dumps(record())))[0] == 503
    assert sent(metrics_ns, "LandingFailures", "api")["Sum"] == 1
    assert sent(metrics_ns, "RecordsLanded", "api") is None


@pytest.fixture()
def drops(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> Drops:
    return make_drops(monkeypatch, request)


def test_file_drop_counts_unparseable_lines_and_large_files(
    drops: Drops, warehouse_url, metrics_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = jsonl([record(lote="1"), record(lote="2")]) + b"{not json\n"
    drops.put("incoming/a.jsonl", body)
    drops.deliver()
    assert sent(metrics_ns, "RecordsReceived", "file")["Sum"] == 3
    assert sent(metrics_ns, "RecordsLanded", "file")["Sum"] == 3
    assert sent(metrics_ns, "RecordsRejected", "file")["Sum"] == 1

    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "100")
    drops.put("incoming/big.jsonl", jsonl([record(lote=str(i)) for i in range(10)]))
    drops.deliver()
    assert sent(metrics_ns, "LargeFilesHandedOff", "file")["Sum"] == 1


def test_in_the_lambda_runtime_only_emf_is_written(
    aws,
    warehouse_url,
    metrics_ns: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.11")
    sns_handler.handler(sns_event(json.dumps(record())), Context())
    assert value(emf_lines(capsys.readouterr().out)[0], "RecordsLanded") == 1
    assert emf_mirror.flush(10)
    assert metric_names(metrics_ns) == set()  # CloudWatch Logs would extract it; no PutMetricData


def test_concurrent_invocations_keep_their_own_metrics(metrics_ns: str) -> None:
    """Powertools' Metrics() shares its metric set across instances; each invocation here has a
    provider of its own, so threads of one process (the local bridge) never mix them."""
    barrier = threading.Barrier(8)
    documents: list[dict] = []

    def invocation(i: int) -> None:
        with common.landing_metrics(f"s{i % 2}") as metrics:
            barrier.wait(5)
            metrics.add("RecordsReceived", i)
            barrier.wait(5)
            documents.append(metrics.metrics.serialize_metric_set())

    threads = [threading.Thread(target=invocation, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted((d["Source"], value(d, "RecordsReceived")) for d in documents) == [
        (f"s{i % 2}", float(i)) for i in sorted(range(8), key=lambda i: (i % 2, i))
    ]
    assert emf_mirror.flush(10)
    assert metric_stats(metrics_ns, "RecordsReceived", Source="s1")["Sum"] == 1 + 3 + 5 + 7


def test_a_failing_metrics_flush_never_fails_a_landing(
    aws, warehouse_url, metrics_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("EMF serializer exploded")

    monkeypatch.setattr(common.Metrics, "serialize_metric_set", broken)
    result = sns_handler.handler(sns_event(json.dumps(record())), Context())
    assert len(result["landed"]) == 1
    assert emf_mirror.flush(10)
    assert metric_names(metrics_ns) == set()
