"""The output topic: one ``PartitionLoadedNotice`` per refreshed farm × day partition.

Downstream systems subscribe to ``FEEDLOT_PROCESSED_EVENTS_TOPIC`` (filtering on the ``fazenda``
message attribute if they like) instead of polling the warehouse or the bucket. Notices go out in
batches of 10 (SNS PublishBatch) after the partition's outputs are durable. On AWS the topic
comes from ``deploy/cloudformation/analytics.yaml``; where it does not exist yet (a fresh local
stack) it is created on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from feedlot_pipeline.analytics.targets import AnalyticsOutputError, AnalyticsTargets
from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.core.contracts import PartitionLoadedNotice

_BATCH = 10
log = logging.getLogger("feedlot.analytics")


def ensure_topic(targets: AnalyticsTargets) -> str:
    """The topic's ARN, creating the topic if it is missing (CreateTopic is idempotent)."""
    if targets.events_topic.startswith("arn:"):
        return targets.events_topic
    return client("sns").create_topic(Name=targets.events_topic)["TopicArn"]


def publish_notices(
    targets: AnalyticsTargets, notices: Sequence[PartitionLoadedNotice]
) -> list[str]:
    """Publish the notices; their SNS message ids, in order. AnalyticsOutputError on failure."""
    if not notices:
        return []
    sns = client("sns")
    arn = topic_arn(targets.events_topic)
    ids: list[str] = []
    for start in range(0, len(notices), _BATCH):
        chunk = notices[start : start + _BATCH]
        entries = [
            {
                "Id": str(i),
                "Message": notice.to_json(),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": notice.type},
                    "fazenda": {"DataType": "String", "StringValue": notice.fazenda},
                    "dia": {"DataType": "String", "StringValue": notice.dia},
                },
            }
            for i, notice in enumerate(chunk)
        ]
        try:
            try:
                response = sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
            except sns.exceptions.NotFoundException:
                arn = ensure_topic(targets)
                response = sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
        except Exception as err:  # noqa: BLE001 - explained
            raise AnalyticsOutputError(
                f"cannot publish partition notices on {targets.events_topic} "
                f"(FEEDLOT_PROCESSED_EVENTS_TOPIC): {type(err).__name__}: {err}"
            ) from err
        if response.get("Failed"):
            failed = response["Failed"][0]
            raise AnalyticsOutputError(
                f"{len(response['Failed'])} partition notice(s) refused by "
                f"{targets.events_topic}: {failed.get('Code')}: {failed.get('Message')}"
            )
        by_id = {s["Id"]: s["MessageId"] for s in response.get("Successful", [])}
        ids.extend(by_id.get(str(i), "") for i in range(len(chunk)))
    return ids
