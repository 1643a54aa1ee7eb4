"""Lambda for the SNS records topic: land what farms publish in the raw zone, then notify.

Deployed as ``feedlot_pipeline.lambdas.sns_handler.handler``; locally the Lambda bridge of
``feedlot local up`` calls it with the same event. It raises on any failure so Lambda's async
retries (and later the failure destination) take over; it never turns an error into a return value.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.landing import land_records, split_body

logger = Logger(service="feedlot-landing-sns")

CLIENTS_TTL_SECONDS = 60.0
_clients_cache: tuple[float, dict[str, str]] | None = None


class InvalidEvent(ValueError):
    """The Lambda event is not an SNS event: a wiring error, not bad data."""


def clients() -> dict[str, str]:
    """cod_cliente → fazenda from the warehouse, cached for a minute per Lambda container."""
    global _clients_cache
    now = time.monotonic()
    if _clients_cache is None or now - _clients_cache[0] > CLIENTS_TTL_SECONDS:
        from feedlot_pipeline.warehouse.store import Warehouse

        warehouse = Warehouse.from_env()
        try:
            _clients_cache = (now, warehouse.clients())
        finally:
            warehouse.dispose()
    return _clients_cache[1]


def _sns_records(event: Any) -> list[dict]:
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise InvalidEvent("event has no Records list")
    out = []
    for i, rec in enumerate(event["Records"]):
        sns = rec.get("Sns") if isinstance(rec, dict) else None
        if not isinstance(sns, dict) or rec.get("EventSource") != "aws:sns":
            raise InvalidEvent(f"Records[{i}] is not an aws:sns record")
        if not isinstance(sns.get("MessageId"), str) or not isinstance(sns.get("Message"), str):
            raise InvalidEvent(f"Records[{i}].Sns lacks MessageId or Message")
        out.append(sns)
    return out


def _attribute(sns: dict, name: str) -> str | None:
    attr = (sns.get("MessageAttributes") or {}).get(name)
    return attr.get("Value") if isinstance(attr, dict) else None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context: Any) -> dict:
    """Land each SNS message's records; one raw object per message and (farm, day)."""
    settings = Settings()
    landed = []
    for sns in _sns_records(event):
        correlation_id = _attribute(sns, "correlation_id") or sns["MessageId"]
        logger.set_correlation_id(correlation_id)
        records = split_body(sns["Message"])
        notices = land_records(
            records,
            source="sns",
            event_id=sns["MessageId"],
            clients=clients(),
            settings=settings,
            correlation_id=correlation_id,
        )
        logger.info(
            "landed",
            extra={
                "message_id": sns["MessageId"],
                "records": len(records),
                "objects": [n.key for n in notices],
            },
        )
        landed.extend(n.key for n in notices)
    return {"landed": landed}
