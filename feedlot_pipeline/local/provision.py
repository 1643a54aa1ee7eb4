"""Create the AWS resources the platform expects, idempotently, on whatever endpoint boto3 uses.

On the local stack this runs against moto; ``deploy/`` describes the same resources for AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from feedlot_pipeline.aws import client
from feedlot_pipeline.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    topic_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str


def provision(settings: Settings | None = None, max_receive_count: int = 5) -> Provisioned:
    """Buckets (private, encrypted), the records topic, and the sensor queue with its DLQ."""
    s = settings or Settings()
    s3 = client("s3")
    for bucket in (s.landing_bucket, s.lake_bucket, s.processed_bucket):
        try:
            if s.region == "us-east-1":
                s3.create_bucket(Bucket=bucket)
            else:
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": s.region}
                )
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    sns = client("sns")
    topic_arn = sns.create_topic(Name=s.records_topic)["TopicArn"]
    sqs = client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=s.sensor_dlq, Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=s.sensor_queue,
        Attributes={
            # Long enough for a tick to record its run requests before the notice reappears.
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return Provisioned(topic_arn, queue_url, queue_arn, dlq_url, dlq_arn)
