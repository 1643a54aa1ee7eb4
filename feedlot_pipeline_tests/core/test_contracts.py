"""core.contracts: the large_file message the S3 Lambda sends and the worker's sensor reads."""

from __future__ import annotations

import json

import pytest

from feedlot_pipeline.core.contracts import LargeFileMessage

GOOD = {
    "type": "large_file",
    "version": 1,
    "bucket": "feedlot-landing",
    "key": "incoming/big file.jsonl",
    "size": 60_000_000,
    "etag": "9b2cf535f27731c974343645a3985328-12",
    "event_id": "file-0123456789abcdef0123456789abcdef",
}


def test_round_trip() -> None:
    msg = LargeFileMessage(**{k: v for k, v in GOOD.items() if k not in ("type", "version")})
    assert json.loads(msg.to_json()) == GOOD
    assert LargeFileMessage.parse(msg.to_json()) == msg
    assert LargeFileMessage.parse(json.dumps({**GOOD, "added_later": 1})) == msg  # extras ignored


def test_json_is_ascii_whatever_the_key() -> None:
    msg = LargeFileMessage.parse(json.dumps({**GOOD, "key": "incoming/é\uffff\x01.jsonl"}))
    assert msg.to_json().isascii()
    assert LargeFileMessage.parse(msg.to_json()).key == "incoming/é\uffff\x01.jsonl"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "small_file"}, "type: Input should be 'large_file'"),
        ({"version": 2}, "version: Input should be 1"),
        ({"version": True}, "version: Input should be 1"),
        ({"size": -1}, "size: Input should be greater than or equal to 0"),
        ({"size": "12"}, "size: Input should be a valid integer"),
        ({"size": True}, "size: Input should be a valid integer"),
        ({"size": 1.5}, "size: Input should be a valid integer"),
        ({"bucket": None}, "bucket: Input should be a valid string"),
        ({"event_id": "../x"}, "event_id: String should match pattern"),
        ({"event_id": "a" * 129}, "event_id: String should match pattern"),
    ],
)
def test_parse_refuses_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(ValueError, match="not a valid large_file message") as err:
        LargeFileMessage.parse(json.dumps({**GOOD, **change}))
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "Invalid JSON"),
        ("[1]", "Input should be an object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "key"}), "key: Field required"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "type"}), "type: Field required"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "version"}), "version: Field required"),
    ],
)
def test_parse_refuses_what_is_not_a_message(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        LargeFileMessage.parse(text)
    assert reason in str(err.value)
