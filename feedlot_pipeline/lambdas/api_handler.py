"""Lambda behind API Gateway (REST API, proxy integration, payload 1.0) for ``POST /consumo``.

Deployed as ``feedlot_pipeline.lambdas.api_handler.handler``; locally ``feedlot local up`` serves
it over HTTP through ``feedlot_pipeline.local.api_gateway`` with the same events. The body is one
record (a JSON object) or a JSON array of records. Every record of an accepted body is landed in
the raw zone exactly like the SNS path (``land_records``, source ``api``), including the ones the
core rules reject: those land too (unroutable ones under ``_unrouted``) so the warehouse asset
files them in ``historico_consumo_rejeitados`` with their reason and landed = loaded + rejected
reconciles. The core rules run here only to tell the caller at once which records will be
rejected and why.

Responses (JSON, ``x-correlation-id`` header echoed):

- 202 ``{requestId, correlationId, received, accepted, rejected, landed: [keys], rejections:
  [{index, code, reason}]}``. A record sent twice (in one body or in two requests) is no
  rejection: the same version again changes nothing, a changed version sent later replaces the
  stored one (the old version is kept in historico_consumo_versoes).
- 400 malformed body: not UTF-8, not JSON (NaN/Infinity, numbers beyond a double, nesting over
  1024 levels are not JSON to orjson), a record nested deeper than the raw zone can store as
  received (orjson writes 255 levels; landing would keep only its text), neither object nor
  array, an empty array (nothing to land: almost always a client bug, so it is refused rather than
  answered with zeros), bad base64, or a bad ``x-correlation-id`` / ``idempotency-key`` header.
- 404 / 405 when the event is not ``POST /consumo`` (API Gateway routes only that here).
- 413 body over ``FEEDLOT_INGEST_API_MAX_BODY_BYTES`` (API Gateway itself stops at 10 MB), or more
  than ``FEEDLOT_INGEST_API_MAX_RECORDS`` records in one body.
- 503 when landing fails (S3/SQS/warehouse): nothing is acknowledged, the client retries.

An ``idempotency-key`` header makes a retried request land nothing twice: the object key is built
from it and a hash of the body, so the same key with a different body lands separately.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, event_source

from feedlot_pipeline.core.records import RecordError, clean, get_rule, route
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.lambdas import common
from feedlot_pipeline.lambdas.common import InvalidEvent
from feedlot_pipeline.warehouse.verdicts import PARTITION_MISMATCH

logger = Logger(service="feedlot-landing-api")

SOURCE = "api"
RESOURCE = "/consumo"
METHOD = "POST"
MAX_LISTED_REJECTIONS = 1000  # the response stays small; counts are always complete
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch; also safe as S3 metadata (ASCII)

__all__ = ["InvalidEvent", "handler"]


class _Refused(Exception):
    """A request answered with an error status before anything is landed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def max_body_bytes() -> int:
    """FEEDLOT_INGEST_API_MAX_BODY_BYTES as the environment says now."""
    return common.settings().ingest_api_max_body_bytes


def _header(event: APIGatewayProxyEvent, name: str) -> str | None:
    """A header, case-insensitively; the single-value ``headers`` first, else the last of
    ``multiValueHeaders`` (API Gateway fills both, keeping the client's case)."""
    value = event.headers.get(name)
    if value is None:
        values = event.multi_value_headers.get(name)
        value = values[-1] if isinstance(values, list) and values else None
    return None if value is None else str(value)


def _token_header(event: APIGatewayProxyEvent, name: str) -> str | None:
    value = _header(event, name)
    if value is None:
        return None
    if not _TOKEN.fullmatch(value):
        raise _Refused(400, f"{name} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def _body_bytes(event: APIGatewayProxyEvent, limit: int) -> bytes:
    """The raw body, base64-decoded when API Gateway encoded it; 413 past ``limit`` bytes.

    Not Powertools' ``decoded_body``: the size is checked before decoding, and the bytes are
    kept (a body that is not UTF-8 is a 400 with the offending byte, not an exception).
    """
    body = event.body
    if body is None or body == "":
        raise _Refused(400, "empty body: send a JSON object or a JSON array of records")
    if not isinstance(body, str):
        raise InvalidEvent("event body is not a string")
    if event.is_base64_encoded:
        if len(body) > 4 * (limit // 3 + 1) + 4:  # decoded size is at most 3/4 of this
            raise _Refused(413, f"body exceeds {limit} bytes")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _Refused(400, "body is marked base64 but is not valid base64") from None
    else:
        if len(body) > limit:  # characters ≤ bytes: no need to encode a huge body to know
            raise _Refused(413, f"body exceeds {limit} bytes")
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise _Refused(400, "body is not valid UTF-8 (lone surrogate)") from None
    if len(data) > limit:
        raise _Refused(413, f"body exceeds {limit} bytes")
    return data


def parse_body(data: bytes, max_records: int | None = None) -> list[Any]:
    """The records of a body: a JSON object is one record, an array is many; else 400; 413 above
    ``max_records``."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Refused(400, f"body is not valid UTF-8 (byte {err.start})") from None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise _Refused(400, f"body is not valid JSON: {err}") from None
    if isinstance(parsed, dict):
        records = [parsed]
    elif isinstance(parsed, list):
        if not parsed:
            raise _Refused(400, "empty array: send at least one record")
        if max_records is not None and len(parsed) > max_records:
            raise _Refused(
                413,
                f"{len(parsed)} records in one request; at most {max_records} "
                "(FEEDLOT_INGEST_API_MAX_RECORDS): split the batch",
            )
        records = parsed
    else:
        raise _Refused(400, f"body must be a JSON object or array, not {type(parsed).__name__}")
    for index, raw in enumerate(records):
        try:  # the raw zone stores each record as JSON; orjson writes at most 255 levels
            orjson.dumps(raw)
        except orjson.JSONEncodeError as err:
            raise _Refused(
                400, f"record {index} cannot be stored as received ({err}): nested too deeply"
            ) from None
    return records


def judge(
    records: list[Any], clients: Mapping[str, str], settings: Settings, now: datetime, event_id: str
) -> list[dict[str, Any]]:
    """Which records the warehouse will reject and why: the core rules, as the loader runs them.

    A record repeated in the body is no rejection: the same version again is unchanged, another
    version of it is superseded by the later one (``warehouse.verdicts``).
    """
    rule = get_rule(settings.consumo_meta_rule)
    bounds = settings.valid_days(now.date())
    rejections: list[dict[str, Any]] = []
    for index, raw in enumerate(records):
        try:
            clean(raw, clients, rule, event_id, now)
        except RecordError as err:
            rejections.append({"index": index, "code": err.code, "reason": err.reason})
            continue
        where = route(raw, clients, now.date(), bounds)
        if where.reason is not None:  # landed under _unrouted: the loader's partition check
            rejections.append({"index": index, "code": PARTITION_MISMATCH, "reason": where.reason})
    return rejections


def _response(status: int, body: dict, correlation_id: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if correlation_id:
        headers["x-correlation-id"] = correlation_id
    if status == 405:
        headers["Allow"] = METHOD
    if status == 503:
        headers["Retry-After"] = "1"
    return {
        "statusCode": status,
        "headers": headers,
        "body": orjson.dumps(body).decode(),
        "isBase64Encoded": False,
    }


def check_event(event: Any) -> None:
    """InvalidEvent unless this is a REST API (payload 1.0) proxy event with a request id.

    Powertools' ``APIGatewayProxyEvent`` wraps anything; this keeps a wiring mistake (another
    event source, an HTTP API payload 2.0 event) a clear error instead of a 4xx answer.
    """
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        raise InvalidEvent("event has no requestContext: not an API Gateway proxy event")
    request_id = event["requestContext"].get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidEvent("requestContext has no requestId")
    if not isinstance(event.get("httpMethod"), str):
        raise InvalidEvent("event has no httpMethod: not a REST API (payload 1.0) proxy event")


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=APIGatewayProxyEvent)
def handler(event: APIGatewayProxyEvent, context: Any) -> dict:
    """Land the records of one ``POST /consumo``; answer 202 with counts, keys and rejections."""
    started = time.perf_counter()
    check_event(event.raw_event)
    request_id = event.request_context.request_id
    correlation_id = request_id
    logger.set_correlation_id(request_id)
    s = common.settings()
    try:
        correlation_id = _token_header(event, "x-correlation-id") or request_id
        logger.set_correlation_id(correlation_id)
        resource = event.get("resource") or event.get("path")
        if resource != RESOURCE:
            raise _Refused(404, f"no route {resource!r}: POST {RESOURCE}")
        if event.http_method != METHOD:
            raise _Refused(405, f"{event.http_method} not allowed on {RESOURCE}: use {METHOD}")
        idempotency_key = _token_header(event, "idempotency-key")
        data = _body_bytes(event, s.ingest_api_max_body_bytes)
        records = parse_body(data, s.ingest_api_max_records)
    except _Refused as refused:
        logger.warning(
            "request refused",
            extra={"status": refused.status, "reason": refused.message, "request_id": request_id},
        )
        body = {"message": refused.message, "requestId": request_id}
        return _response(refused.status, body | {"correlationId": correlation_id}, correlation_id)

    event_id = request_id
    if idempotency_key:  # same key and same body → same objects; same key, other body → others
        event_id = f"{idempotency_key}-{hashlib.sha256(data).hexdigest()[:16]}"
    now = datetime.now(timezone.utc)
    try:
        clients = common.client_map()
        rejections = judge(records, clients, s, now, event_id)
        notices = land_records(
            records,
            source=SOURCE,
            event_id=event_id,
            clients=clients,
            settings=s,
            correlation_id=correlation_id,
            received_at=now,
        )
    except Exception as err:  # noqa: BLE001 - any platform failure: nothing acknowledged, retry
        logger.exception("landing failed", extra={"request_id": request_id})
        body = {
            "message": f"could not land the records, retry: {type(err).__name__}",
            "requestId": request_id,
            "correlationId": correlation_id,
        }
        return _response(503, body, correlation_id)

    keys = [n.key for n in notices]
    result: dict[str, Any] = {
        "requestId": request_id,
        "correlationId": correlation_id,
        "received": len(records),
        "accepted": len(records) - len(rejections),
        "rejected": len(rejections),
        "landed": keys,
        "rejections": rejections[:MAX_LISTED_REJECTIONS],
    }
    if len(rejections) > MAX_LISTED_REJECTIONS:
        result["rejectionsTruncated"] = True
    logger.info(
        "landed",
        extra={
            "request_id": request_id,
            "event_id": event_id,
            "bytes": len(data),
            "received": result["received"],
            "accepted": result["accepted"],
            "rejected": result["rejected"],
            "objects": keys,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return _response(202, result, correlation_id)
