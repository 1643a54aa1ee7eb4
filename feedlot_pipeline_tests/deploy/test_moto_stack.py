"""Create the stacks on the moto server and check what moto actually builds from them.

moto's CloudFormation (5.2) creates the buckets (with default encryption and tags), the topic,
the three queues (redrive, retention, SSE), the log group, the roles and policies, the Lambda
function (from the uploaded zip; it is never run) and its invoke permission. It skips, with a
warning, AWS::S3::BucketPolicy, AWS::SNS::TopicPolicy, AWS::SQS::QueuePolicy,
AWS::SNS::Subscription and AWS::Lambda::EventInvokeConfig, and ignores a bucket's
PublicAccessBlockConfiguration, OwnershipControls, VersioningConfiguration and
LifecycleConfiguration; test_policies.py checks those statically. deploy/README.md lists the gaps.
"""

from __future__ import annotations

import ast
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timezone

import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.core.lake import partition_prefix
from feedlot_pipeline_tests.deploy.cfn import TEMPLATE_DIR, load_template, stack_env_module

PUBLIC_GRANTEES = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:feedlot/warehouse-AbCdEf"


def _parameters(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


def _create(name: str, template: str, parameters: dict[str, str]) -> dict:
    cfn = client("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=(TEMPLATE_DIR / template).read_text(),
        Parameters=_parameters(parameters),
        Capabilities=["CAPABILITY_IAM"],
    )
    # Real CloudFormation is asynchronous; moto completes within the call. Wait either way.
    cfn.get_waiter("stack_create_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return cfn.describe_stacks(StackName=name)["Stacks"][0]


def _outputs(stack: dict) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _policy_document(document: object) -> dict:
    # moto returns a CloudFormation-created inline role policy as a Python repr string, not
    # JSON (a moto quirk); managed policy versions come back as JSON.
    if isinstance(document, dict):
        return document
    text = str(document)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


@pytest.fixture(scope="module")
def core(moto_endpoint: str) -> Iterator[dict]:
    """A core stack with unique names on the session's moto server: (names, stack)."""
    tag = f"d{uuid.uuid4().hex[:8]}"
    s3 = client("s3")
    artifacts = f"{tag}-artifacts"
    s3.create_bucket(Bucket=artifacts)
    # A stand-in deployment zip: moto stores and hashes the code, it never runs it.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("feedlot_pipeline/__init__.py", "")
    s3.put_object(Bucket=artifacts, Key="lambda/sns_handler.zip", Body=buffer.getvalue())
    names = {
        "EnvironmentName": tag,
        "LandingBucketName": f"{tag}-landing",
        "LakeBucketName": f"{tag}-lake",
        "ProcessedBucketName": f"{tag}-processed",
        "RecordsTopicName": f"{tag}-records",
        "SensorQueueName": f"{tag}-sensor",
        "SensorDlqName": f"{tag}-sensor-dlq",
        "SnsHandlerFailureQueueName": f"{tag}-sns-failures",
        "FailureTopicName": f"{tag}-failures",
        "FailuresInboxName": f"{tag}-failures-inbox",
        "LambdaCodeBucket": artifacts,
        "LambdaCodeKey": "lambda/sns_handler.zip",
        "WarehouseSecretArn": SECRET_ARN,
    }
    stack = _create(f"{tag}-core", "core.yaml", names)
    yield {"names": names, "stack": stack, "stack_name": f"{tag}-core", "tag": tag}


def test_core_stack_completes_with_every_output(core: dict) -> None:
    stack = core["stack"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    declared = set(load_template(TEMPLATE_DIR / "core.yaml")["Outputs"])
    assert set(_outputs(stack)) == declared


def test_buckets_exist_encrypted_and_not_public(core: dict) -> None:
    s3 = client("s3")
    names = core["names"]
    for bucket in (
        names["LandingBucketName"],
        names["LakeBucketName"],
        names["ProcessedBucketName"],
    ):
        s3.head_bucket(Bucket=bucket)
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
        assert not [g for g in grants if g["Grantee"].get("URI") in PUBLIC_GRANTEES]
        # moto does not apply the bucket policy, so none grants anyone anything here.
        with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
            s3.get_bucket_policy(Bucket=bucket)


def test_sensor_queue_redrives_to_dlq(core: dict) -> None:
    sqs = client("sqs")
    out = _outputs(core["stack"])
    attrs = sqs.get_queue_attributes(QueueUrl=out["SensorQueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": out["SensorDlqArn"],
        "maxReceiveCount": 10,
    }
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["SqsManagedSseEnabled"] == "true"
    for url in (out["SensorDlqUrl"], out["SnsHandlerFailureQueueUrl"]):
        dlq = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert dlq["MessageRetentionPeriod"] == "1209600"
        assert dlq["SqsManagedSseEnabled"] == "true"


def test_topic_exists_encrypted(core: dict) -> None:
    arn = _outputs(core["stack"])["RecordsTopicArn"]
    attrs = client("sns").get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attrs["TopicArn"] == arn
    assert attrs["KmsMasterKeyId"] == "alias/aws/sns"


def test_lambda_function_configured(core: dict) -> None:
    out = _outputs(core["stack"])
    lam = client("lambda")
    config = lam.get_function_configuration(FunctionName=out["SnsHandlerFunctionName"])
    assert config["Runtime"] == "python3.11"
    assert config["Handler"] == "feedlot_pipeline.lambdas.sns_handler.handler"
    assert config["Role"] == out["SnsHandlerRoleArn"]
    env = config["Environment"]["Variables"]
    assert env["FEEDLOT_LAKE_BUCKET"] == core["names"]["LakeBucketName"]
    assert env["FEEDLOT_SENSOR_QUEUE"] == out["SensorQueueUrl"]
    # The function reads the warehouse URL from the secret at run time (rotation-safe): its
    # configuration holds the secret's ARN and key, never the URL.
    assert "FEEDLOT_WAREHOUSE_URL" not in env
    assert env["FEEDLOT_WAREHOUSE_SECRET"] == SECRET_ARN
    assert env["FEEDLOT_WAREHOUSE_SECRET_KEY"] == "url"
    assert not config.get("VpcConfig", {}).get("SubnetIds")  # no network.yaml given here
    policy = json.loads(lam.get_policy(FunctionName=out["SnsHandlerFunctionName"])["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == out["RecordsTopicArn"]


def test_lambda_role_resolves_to_this_stacks_arns(core: dict) -> None:
    out = _outputs(core["stack"])
    iam = client("iam")
    role = out["SnsHandlerRoleArn"].rsplit("/", 1)[1]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = _policy_document(
        iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    )
    # moto keeps a conditional statement whose condition is false (!If … AWS::NoValue, the
    # VPC statements without LambdaSubnetIds) as a null entry; CloudFormation drops it.
    assert None in document["Statement"]
    by_sid = {s["Sid"]: s for s in document["Statement"] if s is not None}
    assert not any(sid.startswith("VpcNetworkInterfaces") for sid in by_sid)
    assert by_sid["WriteRawZone"]["Resource"] == f"{out['LakeBucketArn']}/historico_diario/*"
    assert by_sid["NotifySensorQueue"]["Resource"] == out["SensorQueueArn"]
    assert by_sid["OnFailureDestination"]["Resource"] == out["FailureTopicArn"]
    assert by_sid["OwnLogGroupOnly"]["Resource"].endswith(
        f":log-group:/aws/lambda/{out['SnsHandlerFunctionName']}:*"
    )


def test_platform_code_runs_on_the_stack_outputs(
    core: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outputs, exported as deploy/stack_env.py prints them, drive the real landing code."""
    from feedlot_pipeline.ingestion.landing import land_records
    from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource

    env = stack_env_module().stack_env(core["stack_name"], client("cloudformation"))
    assert set(env) >= {"FEEDLOT_LAKE_BUCKET", "FEEDLOT_SENSOR_QUEUE", "FEEDLOT_SENSOR_DLQ"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    record = {
        "id_curral": "25994051003275",
        "id_raca": "28551700000020",
        "id_lote": "1",
        "peso_entrada": 234.941,
        "peso_medio": 360.341,
        "data": "2023-01-01 00:00:00 UTC",
        "quantidade_animais": "51",
        "dia_confinamento": "66",
        "consumo_real": 9.076451,
        "cod_cliente": "FazendaUm",
    }
    (notice,) = land_records(
        [record],
        source="sns",
        event_id=f"msg-{core['tag']}",
        clients={"FazendaUm": "fazenda_um"},
        received_at=datetime(2023, 1, 2, tzinfo=timezone.utc),
    )
    assert notice.key.startswith(partition_prefix("fazenda_um", date(2023, 1, 1)))

    lake = LakeResource(bucket=env["FEEDLOT_LAKE_BUCKET"])
    assert [o.key for o in lake.partition_objects("fazenda_um", date(2023, 1, 1))] == [notice.key]
    queue = SensorQueueResource(queue=env["FEEDLOT_SENSOR_QUEUE"], dlq=env["FEEDLOT_SENSOR_DLQ"])
    messages = client("sqs").receive_message(QueueUrl=queue.url(), MaxNumberOfMessages=10)
    bodies = [LandingNotice.parse(m["Body"]) for m in messages.get("Messages", [])]
    assert bodies == [notice]


def test_stack_env_script_prints_exports(core: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert stack_env_module().main([core["stack_name"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = _outputs(core["stack"])
    assert f"export FEEDLOT_LAKE_BUCKET={core['names']['LakeBucketName']}" in lines
    assert f"export FEEDLOT_SENSOR_QUEUE={out['SensorQueueUrl']}" in lines
    assert f"export FEEDLOT_FAILURE_TOPIC={out['FailureTopicArn']}" in lines
    assert len(lines) == 9 and all(line.startswith("export ") for line in lines)


@pytest.mark.parametrize("service", ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"])
def test_iam_stack_imports_core(core: dict, service: str) -> None:
    name = f"{core['tag']}-iam-{service.split('.')[0]}"
    stack = _create(
        name, "iam.yaml", {"CoreStackName": core["stack_name"], "DagsterPrincipalService": service}
    )
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    out, core_out = _outputs(stack), _outputs(core["stack"])
    assert ("DagsterInstanceProfileName" in out) == (service == "ec2.amazonaws.com")

    iam = client("iam")
    role = iam.get_role(RoleName=out["DagsterRoleName"])["Role"]
    trust = _policy_document(role["AssumeRolePolicyDocument"])
    assert trust["Statement"][0]["Principal"] == {"Service": service}
    attached = iam.list_attached_role_policies(RoleName=out["DagsterRoleName"])
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [out["DagsterAccessPolicyArn"]]

    policy = iam.get_policy(PolicyArn=out["DagsterAccessPolicyArn"])["Policy"]
    version = iam.get_policy_version(
        PolicyArn=out["DagsterAccessPolicyArn"], VersionId=policy["DefaultVersionId"]
    )
    by_sid = {
        s["Sid"]: s for s in _policy_document(version["PolicyVersion"]["Document"])["Statement"]
    }
    assert by_sid["DrainSensorQueue"]["Resource"] == core_out["SensorQueueArn"]
    assert by_sid["ParkPoisonNoticesInDlq"]["Resource"] == core_out["SensorDlqArn"]
    assert by_sid["ListRawZoneOnly"]["Resource"] == core_out["LakeBucketArn"]
    assert by_sid["ReadRawZone"]["Resource"] == f"{core_out['LakeBucketArn']}/historico_diario/*"
    assert by_sid["WriteProcessedOutputs"]["Resource"] == f"{core_out['ProcessedBucketArn']}/*"
