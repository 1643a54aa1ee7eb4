"""The S3 file-drop Lambda with the events moto's S3 really emits, against moto and PostgreSQL.

Every test uploads real objects with boto3; the bucket notification (provisioned like the local
stack: S3 → SNS file-drops topic) is captured by an SQS queue subscribed to that topic, and the
captured S3 events are handed to the handler as a Lambda would receive them.
"""

from __future__ import annotations

import gzip
import json

import orjson
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LargeFileMessage
from feedlot_pipeline.lambdas import s3_handler
from feedlot_pipeline_tests.helpers import (
    Context,
    Drops,
    csv_bytes,
    jsonl,
    make_drops,
    receive_all,
    record,
)


@pytest.fixture()
def drops(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> Drops:
    """The ``aws`` resources plus uniquely named file-drop resources and an event capture."""
    return make_drops(monkeypatch, request)


def landed_records(drops: Drops) -> list:
    """Every raw record in the lake (each raw object's lines)."""
    s3 = client("s3")
    out = []
    for key in drops.lake_keys():
        body = s3.get_object(Bucket=drops.settings.lake_bucket, Key=key)["Body"].read()
        out.extend(orjson.loads(line) for line in body.splitlines() if line)
    return out


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("a.jsonl", jsonl),
        ("a.json", orjson.dumps),
        ("a.csv", csv_bytes),
        ("a.jsonl.gz", lambda rs: gzip.compress(jsonl(rs))),
        ("gzip-without-suffix", lambda rs: gzip.compress(orjson.dumps(rs))),
    ],
)
def test_each_format_lands_per_partition(drops: Drops, warehouse_url, name, make) -> None:
    records = [record(lote="1"), record(lote="2"), record("FazendaDois", lote="3")]
    drops.put(f"incoming/{name}", make(records))
    (result,) = drops.deliver()
    (file,) = result["files"]
    assert (file["status"], file["records"]) == ("landed", 3)
    assert sorted(k.split("/")[1] for k in file["landed"]) == ["fazenda_dois", "fazenda_um"]
    assert all(k.startswith("historico_diario/") and "/file-" in k for k in file["landed"])
    notices = drops.notices()
    assert sum(n.records for n in notices) == 3 and {n.source for n in notices} == {"file"}
    got = sorted(r["id_lote"] for r in landed_records(drops))
    assert got == ["1", "2", "3"]
    if name == "a.csv":  # values stay strings; the core rules accept digit strings
        assert all(isinstance(r["peso_medio"], str) for r in landed_records(drops))


@pytest.mark.parametrize(
    "key",
    [
        "incoming/with space/a b.jsonl",
        "incoming/plus+sign/a+b.jsonl",
        "incoming/ünïcødé/é€.jsonl",
        "incoming/deep/er/path/x%41.jsonl",
    ],
)
def test_url_encoded_keys_are_decoded(drops: Drops, warehouse_url, key) -> None:
    drops.put(key, jsonl([record()]))
    (event,) = drops.events()
    encoded = event["Records"][0]["s3"]["object"]["key"]
    assert "/" not in encoded or encoded != key  # S3 sends it URL-encoded
    result = s3_handler.handler(event, Context())
    (file,) = result["files"]
    assert (file["key"], file["status"], file["records"]) == (key, "landed", 1)


def test_test_event_is_ignored(drops: Drops, warehouse_url) -> None:
    # Setting the configuration again makes S3 send s3:TestEvent to the topic.
    s3 = client("s3")
    config = s3.get_bucket_notification_configuration(Bucket=drops.bucket)
    config.pop("ResponseMetadata")
    s3.put_bucket_notification_configuration(Bucket=drops.bucket, NotificationConfiguration=config)
    (event,) = drops.events()
    assert event["Event"] == "s3:TestEvent"
    assert s3_handler.handler(event, Context()) == {"ignored": "s3:TestEvent"}
    assert drops.lake_keys() == {}


def test_duplicate_object_created_lands_nothing_twice(drops: Drops, warehouse_url) -> None:
    """moto, like S3, announces a multipart upload twice (Put and CompleteMultipartUpload)."""
    s3 = client("s3")
    key = "incoming/multipart.jsonl"
    # A first part must be >= 5 MiB: blank lines pad it (the parser skips them).
    part1 = jsonl([record(lote=str(i)) for i in range(12_000)]) + (b" " * 1023 + b"\n") * 5200
    part2 = jsonl([record("FazendaDois", lote="x1")])
    assert len(part1) > 5 * 1024 * 1024
    upload = s3.create_multipart_upload(Bucket=drops.bucket, Key=key)["UploadId"]
    parts = []
    for number, body in ((1, part1), (2, part2)):
        etag = s3.upload_part(
            Bucket=drops.bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=drops.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    events = drops.events()
    assert [e["Records"][0]["eventName"] for e in events] == [
        "ObjectCreated:Put",
        "ObjectCreated:CompleteMultipartUpload",
    ]
    first = s3_handler.handler(events[0], Context())["files"][0]
    lake = drops.lake_keys()
    second = s3_handler.handler(events[1], Context())["files"][0]
    assert first["records"] == second["records"] == 12_001
    assert sorted(first["landed"]) == sorted(second["landed"])
    assert drops.lake_keys() == lake  # same objects, same ETags: nothing rewritten
    assert len(lake) == len(set(first["landed"])) == 4  # 3 chunks of fazenda_um + fazenda_dois
    assert sum(n.records for n in drops.notices()) == 2 * 12_001  # notices resent, deduped later


def test_chunks_are_keyed_deterministically(drops, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_FILEDROP_CHUNK_RECORDS", "2")
    drops.put("incoming/c.jsonl", jsonl([record(lote=str(i)) for i in range(5)]))
    (event,) = drops.events()
    keys = s3_handler.handler(event, Context())["files"][0]["landed"]
    assert len(keys) == 3 and len({k.rsplit("-", 1)[0] for k in keys}) == 1
    assert [k.rsplit("-", 1)[1] for k in keys] == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    again = s3_handler.handler(event, Context())["files"][0]["landed"]
    assert again == keys


def test_correlation_id_from_object_metadata(drops: Drops, warehouse_url) -> None:
    drops.put("incoming/m.jsonl", jsonl([record()]), Metadata={"correlation-id": "corr-file-7"})
    drops.put("incoming/n.jsonl", jsonl([record(lote="2")]))
    results = drops.deliver()
    keys = [r["files"][0]["landed"][0] for r in results]
    s3 = client("s3")
    heads = [s3.head_object(Bucket=drops.settings.lake_bucket, Key=k)["Metadata"] for k in keys]
    assert heads[0]["correlation-id"] == "corr-file-7"
    assert heads[1]["correlation-id"] == heads[1]["event-id"].rsplit("-", 1)[0]
    assert {n.correlation_id for n in drops.notices()} == {
        "corr-file-7",
        heads[1]["correlation-id"],
    }


def test_objects_outside_the_prefix_are_ignored(drops: Drops, warehouse_url) -> None:
    drops.put("incoming/ok.jsonl", jsonl([record()]))
    (event,) = drops.events()
    drops.put("elsewhere/x.jsonl", jsonl([record()]))
    assert drops.events() == []  # the notification filter already keeps it out
    outside = json.loads(json.dumps(event))
    outside["Records"][0]["s3"]["object"]["key"] = "elsewhere%2Fx.jsonl"
    other_bucket = json.loads(json.dumps(event))
    other_bucket["Records"][0]["s3"]["bucket"]["name"] = "someone-elses-bucket"
    removed = json.loads(json.dumps(event))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    for ev in (outside, other_bucket, removed):
        (file,) = s3_handler.handler(ev, Context())["files"]
        assert file["status"] == "ignored"
    assert drops.lake_keys() == {}


def test_replaced_object_is_left_to_its_own_event(drops: Drops, warehouse_url) -> None:
    drops.put("incoming/r.jsonl", jsonl([record(lote="old")]))
    drops.put("incoming/r.jsonl", jsonl([record(lote="new")]))
    old, new = drops.events()
    assert s3_handler.handler(old, Context())["files"][0]["status"] == "ignored"
    assert s3_handler.handler(new, Context())["files"][0]["records"] == 1
    assert [r["id_lote"] for r in landed_records(drops)] == ["new"]


def test_large_file_goes_to_the_worker_queue(drops: Drops, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "1000")
    body = jsonl([record(lote=str(i)) for i in range(20)])
    drops.put("incoming/big file.jsonl", body)
    drops.put("incoming/small.jsonl", jsonl([record()]))
    big, small = (r["files"][0] for r in drops.deliver())
    assert big["status"] == "large_file" and small["status"] == "landed"
    assert all("big" not in k for k in drops.lake_keys())
    (msg,) = receive_all(drops.prov.large_file_queue_url)
    body_msg = json.loads(msg["Body"])
    assert body_msg == {
        "type": "large_file",
        "version": 1,
        "bucket": drops.bucket,
        "key": "incoming/big file.jsonl",
        "size": len(body),
        "etag": body_msg["etag"],
        "event_id": big["event_id"],
    }
    assert body_msg["etag"] and body_msg["event_id"].startswith("file-")
    parsed = LargeFileMessage.parse(msg["Body"])  # the contract the worker's sensor reads
    assert (parsed.key, parsed.size, parsed.event_id) == (
        "incoming/big file.jsonl",
        len(body),
        big["event_id"],
    )


def test_removal_without_size_or_etag_is_ignored(drops: Drops) -> None:
    """ObjectRemoved records carry no size and no eTag: ignored, not a KeyError."""
    event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectRemoved:Delete",
                "s3": {
                    "bucket": {"name": drops.bucket},
                    "object": {"key": "incoming/gone+file.jsonl", "sequencer": "0A"},
                },
            }
        ]
    }
    (file,) = s3_handler.handler(event, Context())["files"]
    assert (file["key"], file["status"]) == ("incoming/gone file.jsonl", "ignored")


def test_empty_file_lands_nothing(drops: Drops, warehouse_url) -> None:
    drops.put("incoming/empty.jsonl", b"")
    drops.put("incoming/empty.json", b"[]")
    results = drops.deliver()
    assert [r["files"][0]["records"] for r in results] == [0, 0]
    assert drops.lake_keys() == {} and drops.notices() == []


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": "x"},
        {"Records": [{"eventSource": "aws:sns"}]},
        {"Records": [{"eventSource": "aws:s3", "s3": {}}]},
        {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}, "object": {}}}]},
        {"Records": [{"eventSource": "aws:s3", "s3": {"bucket": "b", "object": {"key": "k"}}}]},
        {"Records": [None]},
        [],
    ],
)
def test_invalid_event_raises(event, drops: Drops) -> None:
    with pytest.raises(s3_handler.InvalidEvent):
        s3_handler.handler(event, Context())


def test_aws_failure_raises_so_lambda_retries(drops, warehouse_url, monkeypatch) -> None:
    drops.put("incoming/f.jsonl", jsonl([record()]))
    (event,) = drops.events()
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "bucket-that-does-not-exist")
    with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
        s3_handler.handler(event, Context())
