"""Create the AWS resources the platform expects, idempotently, on whatever endpoint boto3 uses.

On the local stack this runs against moto; ``deploy/`` describes the same resources for AWS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from feedlot_pipeline.analytics.provisioning import provision_analytics
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import LocalSettings, Settings
from feedlot_pipeline.observability.alerts import provision_alerts


@dataclass(frozen=True)
class Provisioned:
    topic_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    # File drops (S3 → SNS → Lambda bridge /s3), the large-file queue and Firehose.
    file_drops_topic_arn: str = ""
    large_file_queue_url: str = ""
    large_file_dlq_url: str = ""
    firehose_stream_arn: str = ""
    # The failure topic and the queue subscribed to it (raw delivery) to read its documents.
    failure_topic_arn: str = ""
    failures_inbox_url: str = ""
    # The records topic's durable inbox that the local Lambda bridge polls.
    records_inbox_url: str = ""


def provision(settings: Settings | None = None, max_receive_count: int = 10) -> Provisioned:
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
    records_inbox_url = provision_records_inbox(LocalSettings(), topic_arn, max_receive_count)
    drops = provision_file_drops(s, max_receive_count)
    failure_topic_arn, failures_inbox_url = provision_failures(s)
    provision_alerts()
    provision_analytics()
    return Provisioned(
        topic_arn,
        queue_url,
        queue_arn,
        dlq_url,
        dlq_arn,
        file_drops_topic_arn=drops.topic_arn,
        large_file_queue_url=drops.large_file_queue_url,
        large_file_dlq_url=drops.large_file_dlq_url,
        firehose_stream_arn=drops.firehose_stream_arn,
        failure_topic_arn=failure_topic_arn,
        failures_inbox_url=failures_inbox_url,
        records_inbox_url=records_inbox_url,
    )


def _allow_topic(sqs: object, queue_url: str, queue_arn: str, topic_arn: str, sid: str) -> None:
    """The queue policy that lets ``topic_arn`` deliver into the queue."""
    statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    sqs.set_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
    )


def provision_records_inbox(s: LocalSettings, topic_arn: str, max_receive_count: int = 10) -> str:
    """The records topic's inbox queue (and its DLQ), subscribed with the SNS envelope: its URL.

    Locally it stands for what AWS keeps between SNS and a Lambda (the async event queue): a
    message published while the Lambda bridge is down or busy waits here — kept across moto
    restarts by the lake journal — and the bridge deletes it only once the handler succeeded
    (or its failure is parked with the reason). Not part of ``deploy/``: on AWS, SNS invokes
    the Lambda, which retries and has its own on-failure destination.
    """
    sqs = client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=s.records_inbox_dlq, Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=s.records_inbox,
        Attributes={
            "VisibilityTimeout": "30",  # the bridge extends it while an invocation is pending
            "MessageRetentionPeriod": "1209600",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    _allow_topic(sqs, url, arn, topic_arn, "records-topic-delivers")
    client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def provision_failures(settings: Settings | None = None) -> tuple[str, str]:
    """The failure topic and its inbox queue, subscribed with raw delivery: (topic ARN, URL).

    Raw delivery puts the failure document itself in the queue (no SNS envelope), so
    ``feedlot dlq list --queue feedlot-failures-inbox`` shows it as published.
    """
    s = settings or Settings()
    topic_arn = client("sns").create_topic(Name=s.failure_topic)["TopicArn"]
    sqs = client("sqs")
    inbox_url = sqs.create_queue(
        QueueName=s.failures_inbox,
        Attributes={"MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    _allow_topic(sqs, inbox_url, inbox_arn, topic_arn, "failure-topic-delivers")
    client("sns").subscribe(  # idempotent: the same endpoint returns the same subscription
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=inbox_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return topic_arn, inbox_url


@dataclass(frozen=True)
class FileDrops:
    topic_arn: str
    large_file_queue_url: str
    large_file_dlq_url: str
    firehose_stream_arn: str


def provision_file_drops(s: Settings, max_receive_count: int = 10) -> FileDrops:
    """What file drops need: events from the input prefix, the large-file queue, Firehose.

    moto cannot invoke a Lambda, but it delivers bucket notifications to SNS, and SNS to http:
    so ObjectCreated under the input prefix goes to the ``feedlot-file-drops`` topic, to which
    ``feedlot local up`` subscribes the Lambda bridge at ``/s3``; the bridge hands the S3 event
    to ``lambdas.s3_handler`` unchanged. On AWS the notification targets the Lambda directly.
    Setting the configuration makes S3 send an ``s3:TestEvent`` (the handler ignores it).
    Firehose delivers into ``<input prefix>firehose/`` of the landing bucket, so its objects take
    the same path (moto's Firehose writes each PutRecordBatch as one object at once, and that
    write raises the bucket's notifications like any other PutObject).
    """
    prefix = s.landing_input_prefix
    sns = client("sns")
    topic_arn = sns.create_topic(Name=s.file_drops_topic)["TopicArn"]
    account = topic_arn.split(":")[4]
    sns.set_topic_attributes(
        TopicArn=topic_arn,
        AttributeName="Policy",
        AttributeValue=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "landing-bucket-publishes",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "SNS:Publish",
                        "Resource": topic_arn,
                        "Condition": {
                            "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{s.landing_bucket}"},
                            "StringEquals": {"aws:SourceAccount": account},
                        },
                    }
                ],
            }
        ),
    )
    client("s3").put_bucket_notification_configuration(
        Bucket=s.landing_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {
                    "Id": "feedlot-file-drops",
                    "TopicArn": topic_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    sqs = client("sqs")
    dlq_url = sqs.create_queue(
        QueueName=s.large_file_dlq,
        Attributes={"MessageRetentionPeriod": "1209600"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    large_url = sqs.create_queue(
        QueueName=s.large_file_queue,
        Attributes={
            "VisibilityTimeout": "30",  # as the sensor queue: the sensor's pending discipline
            "MessageRetentionPeriod": "1209600",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    return FileDrops(topic_arn, large_url, dlq_url, _firehose(s, prefix, account))


def _firehose(s: Settings, prefix: str, account: str) -> str:
    """The delivery stream into ``<input prefix>firehose/`` (created once, then described)."""
    firehose = client("firehose")
    name = s.firehose_stream
    try:
        found = firehose.describe_delivery_stream(DeliveryStreamName=name)
        return found["DeliveryStreamDescription"]["DeliveryStreamARN"]
    except firehose.exceptions.ResourceNotFoundException:
        pass
    return firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": f"arn:aws:iam::{account}:role/feedlot-firehose-delivery",
            "BucketARN": f"arn:aws:s3:::{s.landing_bucket}",
            "Prefix": f"{prefix}firehose/",
            # Outside the input prefix: a failed delivery is not re-read as a drop.
            "ErrorOutputPrefix": "firehose-errors/!{firehose:error-output-type}/",
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
            "CompressionFormat": "GZIP",
        },
    )["DeliveryStreamARN"]
