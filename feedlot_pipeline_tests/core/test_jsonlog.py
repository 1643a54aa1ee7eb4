"""core.jsonlog: JSON lines with the correlation id, in the shape the Lambdas' Powertools logs
have, so one Logs Insights query reads both."""

from __future__ import annotations

import io
import json
import threading
import uuid

from feedlot_pipeline.core.jsonlog import correlation, get_logger, log_rejections


def _logger() -> tuple[object, io.StringIO]:
    out = io.StringIO()
    return get_logger(f"test{uuid.uuid4().hex[:6]}", stream=out), out


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_lines_are_json_with_the_bound_correlation_id_and_extras() -> None:
    logger, out = _logger()
    with correlation("req-42"):
        logger.info("object loaded", extra={"object_key": "historico_diario/x.jsonl", "rows": 3})
        logger.info("own id", extra={"correlation_id": "other"})
    logger.warning("outside")
    first, own, outside = lines(out)
    assert first["message"] == "object loaded" and first["correlation_id"] == "req-42"
    assert (first["object_key"], first["rows"], first["level"]) == (
        "historico_diario/x.jsonl",
        3,
        "INFO",
    )
    assert first["service"] == "feedlot-dagster" and first["timestamp"].endswith("+00:00")
    assert own["correlation_id"] == "other"
    assert outside["correlation_id"] is None and outside["level"] == "WARNING"


def test_correlation_is_per_thread() -> None:
    logger, out = _logger()
    barrier = threading.Barrier(2)

    def work(cid: str) -> None:
        with correlation(cid):
            barrier.wait(5)
            logger.info("line", extra={"who": cid})

    threads = [threading.Thread(target=work, args=(c,)) for c in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted((d["who"], d["correlation_id"]) for d in lines(out)) == [("a", "a"), ("b", "b")]


def test_rejections_one_line_per_reason_code_and_exceptions() -> None:
    logger, out = _logger()
    log_rejections(logger, {"duplicate": 2, "unknown_client": 1, "none": 0}, source="load")
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("load failed")
    one, two, failed = lines(out)
    assert [(d["reason_code"], d["count"], d["source"]) for d in (one, two)] == [
        ("duplicate", 2, "load"),
        ("unknown_client", 1, "load"),
    ]
    assert failed["exception_type"] == "ValueError" and "bad" in failed["exception"]
    assert get_logger(logger.name.removeprefix("feedlot.")).handlers == logger.handlers  # once
