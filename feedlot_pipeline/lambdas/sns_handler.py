"""Lambda for the SNS records topic: land what farms publish in the raw zone, then notify.

Deployed as ``feedlot_pipeline.lambdas.sns_handler.handler``; locally the Lambda bridge of
``feedlot local up`` calls it with the same event. It raises on any failure so Lambda's async
retries (and later the failure destination) take over; it never turns an error into a return value.
Metrics (``common.landing_metrics``, EMF, dimension Source=sns): RecordsReceived, RecordsLanded,
LandingLatency (SNS publish time → landed and announced) per message; LandingFailures.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import SNSEvent, event_source
from aws_lambda_powertools.utilities.data_classes.sns_event import SNSMessage

from feedlot_pipeline.ingestion.landing import land_records, split_message
from feedlot_pipeline.lambdas import common
from feedlot_pipeline.lambdas.common import InvalidEvent

logger = Logger(service="feedlot-landing-sns")

CORRELATION_ATTRIBUTE = "correlation_id"
SOURCE = "sns"

__all__ = ["InvalidEvent", "handler"]


def check_event(event: Any) -> None:
    """InvalidEvent unless every record is an aws:sns record with a MessageId and a Message.

    Powertools' ``SNSEvent`` wraps anything; this keeps a wiring mistake a clear error.
    """
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        raise InvalidEvent("event has no Records list")
    for i, rec in enumerate(event["Records"]):
        sns = rec.get("Sns") if isinstance(rec, dict) else None
        if not isinstance(sns, dict) or rec.get("EventSource") != "aws:sns":
            raise InvalidEvent(f"Records[{i}] is not an aws:sns record")
        if not isinstance(sns.get("MessageId"), str) or not isinstance(sns.get("Message"), str):
            raise InvalidEvent(f"Records[{i}].Sns lacks MessageId or Message")


def correlation_id(message: SNSMessage, from_body: str | None = None) -> str:
    """The publisher's ``correlation_id`` message attribute, else the one of the body's envelope
    (``from_body``: attributes do not survive every delivery), else the message id."""
    has_attributes = isinstance(message.get("MessageAttributes"), dict)  # may be absent or null
    attribute = message.message_attributes.get(CORRELATION_ATTRIBUTE) if has_attributes else None
    value = attribute.get("Value") if attribute and isinstance(attribute.raw_event, dict) else None
    if isinstance(value, str) and value:
        return value
    return from_body or message.message_id


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=SNSEvent)
def handler(event: SNSEvent, context: Any) -> dict:
    """Land each SNS message's records; one raw object per message and (farm, day)."""
    landed = []
    with common.landing_metrics(SOURCE) as metrics:
        check_event(event.raw_event)
        s = common.settings()
        for record in event.records:
            message = record.sns
            records, enveloped = split_message(message.message)
            corr = correlation_id(message, enveloped)
            logger.set_correlation_id(corr)
            metrics.add("RecordsReceived", len(records))
            notices = land_records(
                records,
                source=SOURCE,
                event_id=message.message_id,
                clients=common.client_map(),
                settings=s,
                correlation_id=corr,
            )
            metrics.add("RecordsLanded", sum(n.records for n in notices))
            metrics.latency_since(common.event_time(message.get("Timestamp")))
            logger.info(
                "landed",
                extra={
                    "message_id": message.message_id,
                    "records": len(records),
                    "objects": [n.key for n in notices],
                },
            )
            landed.extend(n.key for n in notices)
    return {"landed": landed}
