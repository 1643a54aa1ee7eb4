"""Static checks of the templates: least privilege, private TLS-only storage, no literal secrets,
and names and outputs that agree with feedlot_pipeline/core/settings.py.

Each rule in cfn.py is also run against a small bad template, so a rule that silently stopped
matching anything would fail here rather than pass every template.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from feedlot_pipeline.core.settings import DEFAULTS, DOCS
from feedlot_pipeline_tests.deploy.cfn import (
    TEMPLATE_DIR,
    TEMPLATES,
    as_list,
    bucket_problems,
    iam_problems,
    identity_policies,
    load_template,
    queue_problems,
    render,
    resource_policy_problems,
    resources,
    secret_problems,
    stack_env_module,
    statements,
)

CORE = load_template(TEMPLATE_DIR / "core.yaml")
IAM = load_template(TEMPLATE_DIR / "iam.yaml")

# core.yaml parameter → the settings.py variable whose default it must share.
PARAMETER_SETTINGS = {
    "LandingBucketName": "FEEDLOT_LANDING_BUCKET",
    "LakeBucketName": "FEEDLOT_LAKE_BUCKET",
    "ProcessedBucketName": "FEEDLOT_PROCESSED_BUCKET",
    "RecordsTopicName": "FEEDLOT_RECORDS_TOPIC",
    "SensorQueueName": "FEEDLOT_SENSOR_QUEUE",
    "SensorDlqName": "FEEDLOT_SENSOR_DLQ",
    "PartitionStart": "FEEDLOT_PARTITION_START",
    "LandingInputPrefix": "FEEDLOT_LANDING_INPUT_PREFIX",
}
# What the core stack's outputs must provide (FEEDLOT_WAREHOUSE_URL comes from the secret).
CORE_ENV = {
    "AWS_DEFAULT_REGION",
    "FEEDLOT_LANDING_BUCKET",
    "FEEDLOT_LAKE_BUCKET",
    "FEEDLOT_PROCESSED_BUCKET",
    "FEEDLOT_RECORDS_TOPIC",
    "FEEDLOT_SENSOR_QUEUE",
    "FEEDLOT_SENSOR_DLQ",
    "FEEDLOT_FAILURE_TOPIC",
    "FEEDLOT_FAILURES_INBOX",
}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.fixture(params=TEMPLATES, ids=_ids(TEMPLATES))
def template(request: pytest.FixtureRequest) -> dict:
    return load_template(request.param)


# --- rules over every template ---------------------------------------------------------------


def test_identity_policies_are_least_privilege(template: dict) -> None:
    assert iam_problems(template) == []


def test_resource_policies_are_never_public(template: dict) -> None:
    assert resource_policy_problems(template) == []


def test_buckets_are_private_encrypted_and_tls_only(template: dict) -> None:
    assert bucket_problems(template) == []


def test_queues_are_encrypted_and_tls_only(template: dict) -> None:
    assert queue_problems(template) == []


def test_no_literal_secrets(template: dict) -> None:
    assert secret_problems(template) == []


def test_every_template_has_rules_to_check() -> None:
    # The rules above pass vacuously on a template without policies; make sure they have work.
    assert list(identity_policies(CORE)) and list(identity_policies(IAM))
    assert len(list(resources(CORE, "AWS::S3::Bucket"))) == 3
    assert len(list(resources(CORE, "AWS::SQS::Queue"))) == 4


# --- the rules catch what they are for ----------------------------------------------------------


def _role(statement: dict) -> dict:
    return {
        "Resources": {
            "R": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "AssumeRolePolicyDocument": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "lambda.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ]
                    },
                    "Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": [statement]}}],
                },
            }
        }
    }


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b/*"}, "wildcard"),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}, "wildcard"),
        ({"Effect": "Allow", "Action": ["s3:Get*"], "Resource": "arn:aws:s3:::b/*"}, "wildcard"),
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}, "Resource '*'"),
        (
            {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
            "without a narrowing Condition",
        ),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "x"}, "NotAction"),
    ],
)
def test_iam_rule_flags_broad_statements(statement: dict, expected: str) -> None:
    problems = iam_problems(_role(statement))
    assert any(expected in p for p in problems), problems


def test_iam_rule_flags_aws_managed_policies_and_open_trust() -> None:
    bad = _role({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})
    props = bad["Resources"]["R"]["Properties"]
    props["ManagedPolicyArns"] = ["arn:aws:iam::aws:policy/AmazonS3FullAccess"]
    props["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] = {"AWS": "*"}
    problems = iam_problems(bad)
    assert any("AWS managed policy" in p for p in problems)
    assert any("trust policy" in p for p in problems)


def test_bucket_rule_flags_public_or_plain_http_buckets() -> None:
    bad = {
        "Resources": {
            "B": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": False,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "AccessControl": "PublicRead",
                },
            },
            "P": {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": {"Ref": "B"},
                    "PolicyDocument": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": "*",
                                "Action": "s3:GetObject",
                                "Resource": {"Fn::Sub": "${B.Arn}/*"},
                            }
                        ]
                    },
                },
            },
        }
    }
    problems = bucket_problems(bad) + resource_policy_problems(bad)
    for expected in (
        "BlockPublicPolicy",
        "canned ACL",
        "BucketOwnerEnforced",
        "encryption",
        "TLS-only",
        "public Allow",
    ):
        assert any(expected in p for p in problems), (expected, problems)


def test_secret_rule_flags_a_literal_url() -> None:
    bad = {
        "Resources": {
            "F": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Environment": {
                        "Variables": {"FEEDLOT_WAREHOUSE_URL": "postgresql+psycopg://u:pw@h/db"}
                    }
                },
            }
        }
    }
    assert secret_problems(bad)


# --- core.yaml specifics --------------------------------------------------------------------


def test_parameter_defaults_match_settings() -> None:
    params = CORE["Parameters"]
    for parameter, variable in PARAMETER_SETTINGS.items():
        assert str(params[parameter]["Default"]) == DEFAULTS[variable], parameter
    assert "EnvironmentName" in params and "EnvironmentName" in IAM["Parameters"]


def test_outputs_provide_every_platform_variable() -> None:
    # The same rule deploy/stack_env.py applies to a deployed stack, here on the template.
    env_from_outputs = stack_env_module().env_from_outputs
    outputs = env_from_outputs(
        {"Description": o.get("Description", ""), "OutputValue": render(o["Value"])}
        for o in CORE["Outputs"].values()
    )
    assert set(outputs) == CORE_ENV
    assert all(name in DOCS for name in outputs)
    # URLs and ARNs pass straight through feedlot_pipeline.core.aws, sparing GetQueueUrl/STS calls.
    assert outputs["FEEDLOT_SENSOR_QUEUE"] == "${SensorQueue}"
    assert outputs["FEEDLOT_RECORDS_TOPIC"] == "${RecordsTopic}"
    # Everything iam.yaml imports is exported.
    exported = {
        render(o["Export"]["Name"]).replace("${AWS::StackName}", "${CoreStackName}")
        for o in CORE["Outputs"].values()
        if "Export" in o
    }
    imported = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if "Fn::ImportValue" in value:
                imported.add(render(value["Fn::ImportValue"]))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(IAM["Resources"])
    assert imported and imported <= exported, imported - exported


def test_buckets_versioning_and_lifecycle() -> None:
    buckets = dict(resources(CORE, "AWS::S3::Bucket"))
    lake = buckets["LakeBucket"]
    assert lake["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"
    assert lake["DeletionPolicy"] == "Retain"
    rules = buckets["LandingBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any("ExpirationInDays" in r and r["Status"] == "Enabled" for r in rules)


def test_sensor_queue_dead_letters_after_the_sensor_parks() -> None:
    queue = CORE["Resources"]["SensorQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    assert render(redrive["deadLetterTargetArn"]) == "${SensorDlq.Arn}"
    assert render(redrive["maxReceiveCount"]) == "${SensorMaxReceiveCount}"
    # SQS's blind redrive stays a last resort: the sensor parks with a reason before it.
    from feedlot_pipeline.ingestion.queue_sensor import PARK_AFTER_RECEIVES

    assert CORE["Parameters"]["SensorMaxReceiveCount"]["Default"] > PARK_AFTER_RECEIVES
    dlq = CORE["Resources"]["SensorDlq"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] >= queue["MessageRetentionPeriod"]


def test_records_topic_encrypted() -> None:
    assert CORE["Resources"]["RecordsTopic"]["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"


def test_sns_handler_function_wiring() -> None:
    res = CORE["Resources"]
    fn = res["SnsHandlerFunction"]["Properties"]
    assert fn["Runtime"] == "python3.11"
    assert fn["Handler"] == "feedlot_pipeline.lambdas.sns_handler.handler"
    assert render(fn["Code"]["S3Bucket"]) == "${LambdaCodeBucket}"
    assert render(fn["Code"]["S3Key"]) == "${LambdaCodeKey}"
    env = {k: render(v) for k, v in fn["Environment"]["Variables"].items()}
    assert env["FEEDLOT_LAKE_BUCKET"] == "${LakeBucket}"
    assert env["FEEDLOT_SENSOR_QUEUE"] == "${SensorQueue}"
    # The secret is read at run time (rotation-safe): its ARN and key, never the URL.
    assert "FEEDLOT_WAREHOUSE_URL" not in env
    assert env["FEEDLOT_WAREHOUSE_SECRET"] == "${WarehouseSecretArn}"
    assert env["FEEDLOT_WAREHOUSE_SECRET_KEY"] == "${WarehouseSecretJsonKey}"
    # In the VPC exactly when network.yaml's subnets and group are given.
    vpc = fn["VpcConfig"]["Fn::If"]
    assert vpc[0] == "InVpc" and vpc[2] == {"Ref": "AWS::NoValue"}
    # Invoked only by the records topic, subscribed to it, failures parked in their own queue.
    permission = res["SnsHandlerInvokePermission"]["Properties"]
    assert permission["Principal"] == "sns.amazonaws.com"
    assert render(permission["SourceArn"]) == "${RecordsTopic}"
    subscription = res["SnsHandlerSubscription"]["Properties"]
    assert subscription["Protocol"] == "lambda"
    assert render(subscription["TopicArn"]) == "${RecordsTopic}"
    on_failure = res["SnsHandlerAsyncConfig"]["Properties"]["DestinationConfig"]["OnFailure"]
    # Failed events go to the failure topic, whose subscription (filtered on this function's
    # ARN) still parks them in the handler's own failure queue.
    assert render(on_failure["Destination"]) == "${FailureTopic}"
    parked = res["SnsHandlerFailureSubscription"]["Properties"]
    assert render(parked["Endpoint"]) == "${SnsHandlerFailureQueue.Arn}"
    assert parked["RawMessageDelivery"] is True


VPC_ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
}


def assert_vpc_statements_are_conditional(document: dict) -> None:
    """The ENI statements of a Lambda role exist only under InVpc, scoped as in the rotation."""
    raw = as_list(document["Statement"])
    conditional = [item["Fn::If"] for item in raw if isinstance(item, dict) and "Fn::If" in item]
    assert conditional and all(c[0] == "InVpc" for c in conditional)
    assert all(c[2] == {"Ref": "AWS::NoValue"} for c in conditional)
    by_sid = {c[1]["Sid"]: c[1] for c in conditional}
    eni = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:network-interface/*"
    assert render(by_sid["VpcNetworkInterfacesManage"]["Resource"]) == eni
    create = {render(r) for r in by_sid["VpcNetworkInterfacesCreate"]["Resource"]}
    assert eni in create and len(create) == 3
    describe = by_sid["VpcNetworkInterfacesDescribe"]
    assert describe["Resource"] == "*"
    assert describe["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}
    }


def _grants(document: dict) -> dict[str, set[str]]:
    """action → rendered resources it is allowed on."""
    grants: dict[str, set[str]] = {}
    for stmt in statements(document):
        if stmt["Effect"] == "Allow":
            for action in as_list(stmt["Action"]):
                grants.setdefault(action, set()).update(
                    render(r) for r in as_list(stmt["Resource"])
                )
    return grants


def test_sns_handler_role_is_scoped() -> None:
    (document,) = [d for where, d in identity_policies(CORE) if where.startswith("SnsHandlerRole")]
    grants = _grants(document)
    raw_zone = {"${LakeBucket.Arn}/historico_diario/*"}
    assert grants["s3:PutObject"] == raw_zone
    assert grants["s3:GetObject"] == raw_zone
    # Only for HeadObject to answer 404 on a missing key (see the comment in core.yaml).
    assert grants["s3:ListBucket"] == {"${LakeBucket.Arn}"}
    assert grants["sqs:SendMessage"] == {"${SensorQueue.Arn}"}
    assert grants["sns:Publish"] == {"${FailureTopic}"}  # the on-failure destination
    assert grants["secretsmanager:GetSecretValue"] == {"${WarehouseSecretArn}"}
    log_streams = grants["logs:PutLogEvents"]
    assert len(log_streams) == 1 and "log-group:${SnsHandlerLogGroup}:*" in log_streams.pop()
    assert set(grants) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "sqs:SendMessage",
        "sns:Publish",
        "secretsmanager:GetSecretValue",
        *VPC_ENI_ACTIONS,
    }
    assert_vpc_statements_are_conditional(document)


def test_dagster_policy_is_scoped() -> None:
    (document,) = [d for _, d in identity_policies(IAM)]
    grants = _grants(document)
    queue = {"import:${CoreStackName}-SensorQueueArn"}
    dlq = {"import:${CoreStackName}-SensorDlqArn"}
    # ingest.yaml's large-file queues, by name (iam.yaml does not import the ingest stack).
    sqs_arn = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
    large = {sqs_arn + "${LargeFileQueueName}"}
    large_dlq = {sqs_arn + "${LargeFileDlqName}"}
    for action in ("sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"):
        assert grants[action] == queue, action
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert grants[action] == queue | large, action
    assert grants["sqs:GetQueueUrl"] == queue | dlq | large | large_dlq
    assert grants["sqs:SendMessage"] == dlq | large_dlq
    params = IAM["Parameters"]
    assert params["LargeFileQueueName"]["Default"] == DEFAULTS["FEEDLOT_LARGE_FILE_QUEUE"]
    assert params["LargeFileDlqName"]["Default"] == DEFAULTS["FEEDLOT_LARGE_FILE_DLQ"]
    assert grants["s3:GetObject"] == {"import:${CoreStackName}-LakeBucketArn/historico_diario/*"}
    assert grants["s3:PutObject"] == {"import:${CoreStackName}-ProcessedBucketArn/*"}
    assert grants["s3:ListBucket"] == {"import:${CoreStackName}-LakeBucketArn"}
    by_sid = {s["Sid"]: s for s in statements(document)}
    assert by_sid["ListRawZoneOnly"]["Condition"] == {
        "StringLike": {"s3:prefix": ["historico_diario/*"]}
    }
    metrics = by_sid["PublishMetricsToOwnNamespace"]["Condition"]["StringEquals"]
    assert render(metrics["cloudwatch:namespace"]) == "${MetricsNamespace}"
    assert IAM["Parameters"]["MetricsNamespace"]["Default"] == "Feedlot"


# --- every remaining "*" says why ---------------------------------------------------------------

STATEMENT_START = re.compile(r"^\s*- (Sid|Effect):")
STAR_RESOURCE = re.compile(r"""^\s*(Resource:\s*|-\s*)["']\*["']\s*(#.*)?$""")


def unexplained_stars(text: str) -> list[int]:
    """Line numbers of a Resource "*" whose statement (from its first line down to the "*")
    carries no comment saying why."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines):
        if not STAR_RESOURCE.match(line):
            continue
        if line.lstrip().startswith("-") and "Resource:" not in lines[number - 1]:
            continue  # a "*" list item of something else
        start = number
        while start > 0 and not STATEMENT_START.match(lines[start]):
            start -= 1
        if not any("#" in lines[i] for i in range(start, number + 1)):
            found.append(number + 1)
    return found


@pytest.mark.parametrize("path", TEMPLATES, ids=_ids(TEMPLATES))
def test_every_star_resource_is_justified_in_a_comment(path: Path) -> None:
    assert unexplained_stars(path.read_text()) == [], path.name


def test_star_rule_flags_a_bare_star() -> None:
    bare = """
          - Sid: Anything
            Effect: Allow
            Action: s3:GetObject
            Resource: "*"
"""
    said = bare.replace("Effect: Allow", "Effect: Allow\n            # no resource types")
    assert unexplained_stars(bare) == [5]
    assert unexplained_stars(said) == []
