"""ingest.yaml: the HTTP API, file-drop and Firehose sources, least privilege.

The general rules of test_policies.py and test_cfn_lint.py already run over ingest.yaml (they
glob every template). These tests pin what is specific to it and could quietly regress: the API
key on POST /consumo, a Lambda permission scoped to one API/stage/method/path, each role limited
to its prefixes and queues, the Firehose role limited to its two prefixes, and the landing
bucket's notification (core.yaml) filtered on the input prefix. Each scoping check is a function
returning problems, run against a loosened copy too, so a check that stopped matching would fail.

Then both stacks are created on the moto server. moto 5.2.5's CloudFormation skips
AWS::ApiGateway::Stage/ApiKey/UsagePlan/UsagePlanKey, AWS::KinesisFirehose::DeliveryStream,
AWS::Lambda::EventInvokeConfig, AWS::Logs::LogStream and AWS::SQS::QueuePolicy (with a warning),
drops the outputs that Ref them, and ignores a bucket's NotificationConfiguration: those parts
are checked statically only.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator

import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import DEFAULTS, DOCS
from feedlot_pipeline_tests.deploy.cfn import (
    STAR_RESOURCE_ACTIONS,
    TEMPLATE_DIR,
    TEMPLATES,
    as_list,
    identity_policies,
    load_template,
    render,
    resources,
    stack_env_module,
    statements,
)
from feedlot_pipeline_tests.deploy.test_moto_stack import (
    SECRET_ARN,
    _create,
    _outputs,
    _policy_document,
    core,  # noqa: F401  (module-scoped fixture: a core stack for the ingest stack to import)
)
from feedlot_pipeline_tests.deploy.test_policies import (
    VPC_ENI_ACTIONS,
    assert_vpc_statements_are_conditional,
)

INGEST = load_template(TEMPLATE_DIR / "ingest.yaml")
CORE = load_template(TEMPLATE_DIR / "core.yaml")
RES = INGEST["Resources"]

LANDING = "import:${CoreStackName}-LandingBucketArn"
LAKE = "import:${CoreStackName}-LakeBucketArn"
RAW_ZONE = f"{LAKE}/historico_diario/*"
SENSOR_QUEUE = "import:${CoreStackName}-SensorQueueArn"
FAILURE_TOPIC = "import:${CoreStackName}-FailureTopicArn"
SECRET = "${WarehouseSecretArn}"

# ingest.yaml parameter → the settings.py variable whose default it must share.
PARAMETER_SETTINGS = {
    "LargeFileQueueName": "FEEDLOT_LARGE_FILE_QUEUE",
    "LargeFileDlqName": "FEEDLOT_LARGE_FILE_DLQ",
    "FirehoseStreamName": "FEEDLOT_FIREHOSE_STREAM",
    "LandingInputPrefix": "FEEDLOT_LANDING_INPUT_PREFIX",
    "IngestApiMaxBodyBytes": "FEEDLOT_INGEST_API_MAX_BODY_BYTES",
    "FileDropMaxBytes": "FEEDLOT_FILEDROP_MAX_BYTES",
    "FileDropChunkRecords": "FEEDLOT_FILEDROP_CHUNK_RECORDS",
    "FileDropMaxRecordBytes": "FEEDLOT_FILEDROP_MAX_RECORD_BYTES",
    "PartitionStart": "FEEDLOT_PARTITION_START",
}
INGEST_ENV = {
    "FEEDLOT_INGEST_API_URL",
    "FEEDLOT_LARGE_FILE_QUEUE",
    "FEEDLOT_LARGE_FILE_DLQ",
    "FEEDLOT_FIREHOSE_STREAM",
    "FEEDLOT_LANDING_INPUT_PREFIX",
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


def _role_document(template: dict, role: str) -> dict:
    (document,) = [d for where, d in identity_policies(template) if where.startswith(f"{role}/")]
    return document


def _walk(value: object) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


# --- scoping checks (functions, so they can be shown to catch a loosened template) ------------


def star_resource_problems(template: dict) -> list[str]:
    """No Allow on '*' or on a whole bucket's objects ('<bucket>/*'): every grant names its
    resource, and object grants name their prefix. The one exception is a statement of actions
    that have no resource types at all (cfn.STAR_RESOURCE_ACTIONS, e.g. the VPC Describe* of
    a Lambda in a VPC) narrowed by a condition."""
    problems = []
    for where, document in identity_policies(template):
        for stmt in statements(document):
            actions = set(as_list(stmt.get("Action", [])))
            if actions <= STAR_RESOURCE_ACTIONS and stmt.get("Condition"):
                continue
            for resource in as_list(stmt.get("Resource", [])):
                text = str(render(resource))
                if text == "*" or text.endswith("Arn/*") or text.endswith("Arn}/*"):
                    problems.append(f"{where} {stmt.get('Sid')}: unscoped resource {text}")
    return problems


def api_problems(template: dict) -> list[str]:
    """POST /consumo needs an API key; the only method; the permission names API/stage/path."""
    res = template["Resources"]
    problems = []
    methods = [r["Properties"] for _, r in resources(template, "AWS::ApiGateway::Method")]
    if len(methods) != 1:
        problems.append(f"expected exactly one API method, found {len(methods)}")
    for method in methods:
        if method.get("ApiKeyRequired") is not True:
            problems.append(f"{method.get('HttpMethod')} does not require an API key")
        if method.get("HttpMethod") != "POST":
            problems.append(f"method {method.get('HttpMethod')} is not POST")
    permission = res["ApiHandlerInvokePermission"]["Properties"]
    expected = (
        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
        "${IngestApi}/${ApiStageName}/POST/consumo"
    )
    if render(permission.get("SourceArn")) != expected:
        problems.append(f"API permission SourceArn {render(permission.get('SourceArn'))!r}")
    return problems


def firehose_problems(template: dict) -> list[str]:
    """The delivery role writes only the delivery and error prefixes; errors land outside the
    input prefix; no KMS (the landing bucket is SSE-S3)."""
    problems = []
    grants = _grants(_role_document(template, "FirehoseDeliveryRole"))
    allowed_objects = {
        f"{LANDING}/${{LandingInputPrefix}}firehose/*",
        f"{LANDING}/firehose-errors/*",
    }
    for action in ("s3:PutObject", "s3:AbortMultipartUpload"):
        if grants.get(action) != allowed_objects:
            problems.append(f"{action} on {grants.get(action)}")
    for action in ("s3:GetBucketLocation", "s3:ListBucketMultipartUploads", "s3:ListBucket"):
        if grants.get(action, {LANDING}) != {LANDING}:
            problems.append(f"{action} on {grants.get(action)}")
    extra = {a for a in grants if not a.startswith(("s3:", "logs:"))}
    if extra:
        problems.append(f"unexpected actions {sorted(extra)}")
    dest = template["Resources"]["FirehoseStream"]["Properties"][
        "ExtendedS3DestinationConfiguration"
    ]
    if not str(render(dest["Prefix"])).startswith("${LandingInputPrefix}firehose/"):
        problems.append(f"Prefix {render(dest['Prefix'])}")
    error_prefix = str(render(dest["ErrorOutputPrefix"]))
    if not error_prefix.startswith("firehose-errors/"):
        problems.append(f"ErrorOutputPrefix {error_prefix}")
    return problems


def notification_problems(core_template: dict) -> list[str]:
    """Every bucket notification in core is ObjectCreated, filtered on the input prefix."""
    problems = []
    found = 0
    for logical_id, bucket in resources(core_template, "AWS::S3::Bucket"):
        config = bucket.get("Properties", {}).get("NotificationConfiguration")
        if config is None:
            continue
        branches = config["Fn::If"][1:] if "Fn::If" in config else [config]
        for branch in branches:
            if not isinstance(branch, dict) or "Ref" in branch:
                continue  # AWS::NoValue
            for kind in ("LambdaConfigurations", "QueueConfigurations", "TopicConfigurations"):
                for target in branch.get(kind, []):
                    found += 1
                    rules = target.get("Filter", {}).get("S3Key", {}).get("Rules", [])
                    prefixes = [render(r["Value"]) for r in rules if r.get("Name") == "prefix"]
                    if prefixes != ["${LandingInputPrefix}"]:
                        problems.append(f"{logical_id} {kind}: prefix filter {prefixes}")
                    if not str(target.get("Event", "")).startswith("s3:ObjectCreated:"):
                        problems.append(f"{logical_id} {kind}: event {target.get('Event')}")
    if not found:
        problems.append("no bucket notification at all")
    return problems


def test_ingest_template_is_linted_and_policy_checked() -> None:
    # cfn-lint and the rules of test_policies.py run over TEMPLATES (a glob).
    assert TEMPLATE_DIR / "ingest.yaml" in TEMPLATES
    assert len(list(identity_policies(INGEST))) == 3
    assert len(list(resources(INGEST, "AWS::SQS::Queue"))) == 2


def test_scoping_checks_pass() -> None:
    assert star_resource_problems(INGEST) == []
    assert api_problems(INGEST) == []
    assert firehose_problems(INGEST) == []
    assert notification_problems(CORE) == []


def _statement(template: dict, role: str, sid: str) -> dict:
    document = template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    (stmt,) = [s for s in statements(document) if s.get("Sid") == sid]
    return stmt


def test_scoping_checks_catch_loosened_templates() -> None:
    loose = copy.deepcopy(INGEST)
    _statement(loose, "FileDropRole", "ReadDroppedFiles")["Resource"] = {
        "Fn::Sub": ["${LandingArn}/*", {"LandingArn": {"Fn::ImportValue": "x-LandingBucketArn"}}]
    }
    _statement(loose, "ApiHandlerRole", "NotifySensorQueue")["Resource"] = "*"
    assert len(star_resource_problems(loose)) == 2

    loose = copy.deepcopy(INGEST)
    loose["Resources"]["ConsumoPostMethod"]["Properties"]["ApiKeyRequired"] = False
    loose["Resources"]["ApiHandlerInvokePermission"]["Properties"]["SourceArn"] = {
        "Fn::Sub": "arn:aws:execute-api:us-east-1:1:${IngestApi}/*"
    }
    problems = api_problems(loose)
    assert any("API key" in p for p in problems) and any("SourceArn" in p for p in problems)

    loose = copy.deepcopy(INGEST)
    _statement(loose, "FirehoseDeliveryRole", "WriteDeliveryAndErrorPrefixes")["Resource"] = {
        "Fn::Sub": [
            "${LandingArn}/${LandingInputPrefix}*",
            {"LandingArn": {"Fn::ImportValue": {"Fn::Sub": "${CoreStackName}-LandingBucketArn"}}},
        ]
    }
    dest = loose["Resources"]["FirehoseStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    dest["ErrorOutputPrefix"] = "incoming/errors/"
    problems = firehose_problems(loose)
    assert any("s3:PutObject" in p for p in problems)
    assert any("ErrorOutputPrefix" in p for p in problems)

    loose_core = copy.deepcopy(CORE)
    config = loose_core["Resources"]["LandingBucket"]["Properties"]["NotificationConfiguration"]
    del config["Fn::If"][1]["LambdaConfigurations"][0]["Filter"]
    assert notification_problems(loose_core)


# --- parameters and outputs --------------------------------------------------------------------


def test_parameter_defaults_match_settings() -> None:
    params = INGEST["Parameters"]
    for parameter, variable in PARAMETER_SETTINGS.items():
        assert str(params[parameter]["Default"]) == DEFAULTS[variable], parameter
    # The values both stacks must agree on have the same defaults in both.
    for shared in ("PartitionStart", "LandingInputPrefix", "EnvironmentName"):
        assert CORE["Parameters"][shared]["Default"] == params[shared]["Default"], shared


def _env(template: dict) -> dict[str, str]:
    return stack_env_module().env_from_outputs(
        {"Description": o.get("Description", ""), "OutputValue": render(o["Value"])}
        for o in template["Outputs"].values()
    )


def test_outputs_provide_the_ingest_variables_and_never_the_key() -> None:
    env = _env(INGEST)
    assert set(env) == INGEST_ENV
    assert all(name in DOCS for name in env)
    # No variable is claimed by both stacks (stack_env.py merges their outputs).
    assert not set(env) & set(_env(CORE))
    assert env["FEEDLOT_LARGE_FILE_QUEUE"] == "${LargeFileQueue}"  # the URL: no GetQueueUrl
    assert env["FEEDLOT_INGEST_API_URL"].startswith("https://${IngestApi}.execute-api.")
    assert env["FEEDLOT_INGEST_API_URL"].endswith("/${ApiStageName}")
    # The API key appears in outputs by id only (ApiKey's Ref), never its value.
    for output in INGEST["Outputs"].values():
        for node in _walk(output["Value"]):
            assert node.get("Fn::GetAtt", [None])[0] != "IngestApiKey"
        assert "FEEDLOT_INGEST_API_KEY" not in output.get("Description", "")
    assert render(INGEST["Outputs"]["IngestApiKeyId"]["Value"]) == "${IngestApiKey}"
    assert "Value" not in RES["IngestApiKey"]["Properties"]


def test_every_import_is_a_core_export() -> None:
    exported = {
        render(o["Export"]["Name"]).replace("${AWS::StackName}", "${CoreStackName}")
        for o in CORE["Outputs"].values()
        if "Export" in o
    }
    imported = {render(n["Fn::ImportValue"]) for n in _walk(RES) if "Fn::ImportValue" in n}
    assert imported and imported <= exported, imported - exported


# --- the HTTP API ----------------------------------------------------------------------------


def test_api_routes_post_consumo_to_the_handler_with_a_key() -> None:
    api = RES["IngestApi"]["Properties"]
    assert api["BinaryMediaTypes"] == ["*/*"]  # non-UTF-8 bodies arrive base64-encoded
    assert api["ApiKeySourceType"] == "HEADER"
    resource = RES["ConsumoResource"]["Properties"]
    assert resource["PathPart"] == "consumo"
    assert render(resource["ParentId"]) == "${IngestApi.RootResourceId}"
    method = RES["ConsumoPostMethod"]["Properties"]
    assert render(method["ResourceId"]) == "${ConsumoResource}"
    assert method["ApiKeyRequired"] is True
    integration = method["Integration"]
    assert integration["Type"] == "AWS_PROXY" and integration["IntegrationHttpMethod"] == "POST"
    assert "/functions/${ApiHandlerFunction.Arn}/invocations" in render(integration["Uri"])

    plan = RES["IngestUsagePlan"]["Properties"]
    ((stage,),) = [plan["ApiStages"]]
    assert (
        render(stage["ApiId"]) == "${IngestApi}" and render(stage["Stage"]) == "${IngestApiStage}"
    )
    assert render(plan["Throttle"]["RateLimit"]) == "${ApiThrottleRateLimit}"
    assert render(plan["Throttle"]["BurstLimit"]) == "${ApiThrottleBurstLimit}"
    assert render(plan["Quota"]["Limit"]) == "${ApiQuotaLimit}"
    key = RES["IngestUsagePlanKey"]["Properties"]
    assert render(key["KeyId"]) == "${IngestApiKey}" and key["KeyType"] == "API_KEY"
    assert render(key["UsagePlanId"]) == "${IngestUsagePlan}"
    assert render(RES["IngestApiStage"]["Properties"]["StageName"]) == "${ApiStageName}"

    permission = RES["ApiHandlerInvokePermission"]["Properties"]
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert render(permission["FunctionName"]) == "${ApiHandlerFunction.Arn}"


def test_api_handler_function_and_role() -> None:
    fn = RES["ApiHandlerFunction"]["Properties"]
    assert fn["Handler"] == "feedlot_pipeline.lambdas.api_handler.handler"
    assert fn["Runtime"] == "python3.11"
    assert fn["Timeout"] <= 29  # API Gateway's integration timeout
    env = {k: render(v) for k, v in fn["Environment"]["Variables"].items()}
    assert env["FEEDLOT_INGEST_API_MAX_BODY_BYTES"] == "${IngestApiMaxBodyBytes}"
    assert env["FEEDLOT_SENSOR_QUEUE"] == "import:${CoreStackName}-SensorQueueUrl"
    assert env["FEEDLOT_LAKE_BUCKET"] == "import:${CoreStackName}-LakeBucketName"
    assert "FEEDLOT_WAREHOUSE_URL" not in env  # read from the secret at run time
    assert env["FEEDLOT_WAREHOUSE_SECRET"] == "${WarehouseSecretArn}"

    grants = _grants(_role_document(INGEST, "ApiHandlerRole"))
    assert grants["s3:PutObject"] == grants["s3:GetObject"] == {RAW_ZONE}
    assert grants["s3:ListBucket"] == {LAKE}
    assert grants["sqs:SendMessage"] == {SENSOR_QUEUE}
    assert grants["secretsmanager:GetSecretValue"] == {SECRET}
    (log_streams,) = grants["logs:PutLogEvents"]
    assert "log-group:${ApiHandlerLogGroup}:*" in log_streams
    assert set(grants) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "sqs:SendMessage",
        "secretsmanager:GetSecretValue",
        *VPC_ENI_ACTIONS,  # only under InVpc (network.yaml given)
    }
    assert_vpc_statements_are_conditional(_role_document(INGEST, "ApiHandlerRole"))


# --- file drops --------------------------------------------------------------------------------


def test_file_drop_function_role_and_failure_path() -> None:
    fn = RES["FileDropFunction"]["Properties"]
    assert fn["Handler"] == "feedlot_pipeline.lambdas.s3_handler.handler"
    env = {k: render(v) for k, v in fn["Environment"]["Variables"].items()}
    assert env["FEEDLOT_LARGE_FILE_QUEUE"] == "${LargeFileQueue}"
    assert env["FEEDLOT_LANDING_BUCKET"] == "import:${CoreStackName}-LandingBucketName"
    assert env["FEEDLOT_LANDING_INPUT_PREFIX"] == "${LandingInputPrefix}"
    assert env["FEEDLOT_FILEDROP_MAX_BYTES"] == "${FileDropMaxBytes}"

    grants = _grants(_role_document(INGEST, "FileDropRole"))
    assert grants["s3:GetObject"] == {f"{LANDING}/${{LandingInputPrefix}}*", RAW_ZONE}
    assert grants["s3:PutObject"] == {RAW_ZONE}
    assert grants["s3:ListBucket"] == {LAKE}
    assert grants["sqs:SendMessage"] == {SENSOR_QUEUE, "${LargeFileQueue.Arn}"}
    assert grants["sns:Publish"] == {FAILURE_TOPIC}
    assert grants["secretsmanager:GetSecretValue"] == {SECRET}
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
    assert_vpc_statements_are_conditional(_role_document(INGEST, "FileDropRole"))

    async_config = RES["FileDropAsyncConfig"]["Properties"]
    assert render(async_config["FunctionName"]) == "${FileDropFunction}"
    assert render(async_config["DestinationConfig"]["OnFailure"]["Destination"]) == FAILURE_TOPIC
    permission = RES["FileDropInvokePermission"]["Properties"]
    assert permission["Principal"] == "s3.amazonaws.com"
    assert render(permission["SourceArn"]) == LANDING
    assert render(permission["SourceAccount"]) == "${AWS::AccountId}"


def test_landing_notification_targets_the_function_only_when_given() -> None:
    landing = CORE["Resources"]["LandingBucket"]["Properties"]
    condition, configured, absent = landing["NotificationConfiguration"]["Fn::If"]
    assert condition == "HasFileDropFunction"
    assert absent == {"Ref": "AWS::NoValue"}
    (target,) = configured["LambdaConfigurations"]
    assert render(target["Function"]) == "${FileDropFunctionArn}"
    assert CORE["Parameters"]["FileDropFunctionArn"]["Default"] == ""
    assert CORE["Conditions"]["HasFileDropFunction"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "FileDropFunctionArn"}, ""]}]
    }


def test_large_file_queue_dead_letters_only_after_the_sensor_parks() -> None:
    queue = RES["LargeFileQueue"]["Properties"]
    assert render(queue["RedrivePolicy"]["deadLetterTargetArn"]) == "${LargeFileDlq.Arn}"
    assert render(queue["RedrivePolicy"]["maxReceiveCount"]) == "${LargeFileMaxReceiveCount}"
    from feedlot_pipeline.ingestion.queue_sensor import PARK_AFTER_RECEIVES

    assert INGEST["Parameters"]["LargeFileMaxReceiveCount"]["Default"] > PARK_AFTER_RECEIVES
    dlq = RES["LargeFileDlq"]["Properties"]
    assert dlq["MessageRetentionPeriod"] >= queue["MessageRetentionPeriod"]
    assert RES["LargeFileDlq"]["DeletionPolicy"] == "Retain"


# --- Firehose ----------------------------------------------------------------------------------


def test_firehose_stream_into_the_input_prefix() -> None:
    stream = RES["FirehoseStream"]["Properties"]
    assert render(stream["DeliveryStreamName"]) == "${FirehoseStreamName}"
    assert stream["DeliveryStreamType"] == "DirectPut"
    dest = stream["ExtendedS3DestinationConfiguration"]
    assert render(dest["BucketARN"]) == LANDING
    assert render(dest["RoleARN"]) == "${FirehoseDeliveryRole.Arn}"
    assert dest["CompressionFormat"] == "GZIP"
    assert render(dest["BufferingHints"]["IntervalInSeconds"]) == "${FirehoseBufferSeconds}"
    assert render(dest["BufferingHints"]["SizeInMBs"]) == "${FirehoseBufferMiB}"
    # The landing bucket is SSE-S3 (core.yaml), so no KMS grant anywhere in this template.
    landing = CORE["Resources"]["LandingBucket"]["Properties"]
    (rule,) = landing["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    for _, document in identity_policies(INGEST):
        for action in _grants(document):
            assert not action.startswith("kms:"), action
    trust = RES["FirehoseDeliveryRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert render(trust["Condition"]["StringEquals"]["sts:ExternalId"]) == "${AWS::AccountId}"


# --- on the moto server ------------------------------------------------------------------------

# Outputs moto drops because they Ref a resource type its CloudFormation skips.
MOTO_DROPPED_OUTPUTS = {"IngestApiKeyId", "IngestUsagePlanId", "FirehoseStreamName"}


@pytest.fixture(scope="module")
def ingest(core: dict) -> Iterator[dict]:  # noqa: F811
    tag = core["tag"]
    names = {
        "EnvironmentName": tag,
        "CoreStackName": core["stack_name"],
        "LambdaCodeBucket": core["names"]["LambdaCodeBucket"],
        "LambdaCodeKey": core["names"]["LambdaCodeKey"],
        "WarehouseSecretArn": SECRET_ARN,
        "LargeFileQueueName": f"{tag}-large",
        "LargeFileDlqName": f"{tag}-large-dlq",
        "FirehoseStreamName": f"{tag}-firehose",
    }
    stack = _create(f"{tag}-ingest", "ingest.yaml", names)
    yield {"names": names, "stack": stack, "stack_name": f"{tag}-ingest"}


def test_ingest_stack_completes(ingest: dict) -> None:
    assert ingest["stack"]["StackStatus"] == "CREATE_COMPLETE"
    declared = set(INGEST["Outputs"])
    assert set(_outputs(ingest["stack"])) == declared - MOTO_DROPPED_OUTPUTS


def test_api_on_moto_requires_the_key_and_proxies_to_the_handler(ingest: dict) -> None:
    out = _outputs(ingest["stack"])
    api = client("apigateway")
    api_id = out["IngestApiId"]
    items = api.get_resources(restApiId=api_id)["items"]
    (consumo,) = [r for r in items if r.get("path") == "/consumo"]
    method = api.get_method(restApiId=api_id, resourceId=consumo["id"], httpMethod="POST")
    assert method["apiKeyRequired"] is True
    assert method["methodIntegration"]["type"] == "AWS_PROXY"
    function_arn = client("lambda").get_function_configuration(
        FunctionName=out["ApiHandlerFunctionName"]
    )["FunctionArn"]
    assert f"/functions/{function_arn}/invocations" in method["methodIntegration"]["uri"]
    assert out["IngestApiUrl"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/v1"

    policy = json.loads(
        client("lambda").get_policy(FunctionName=out["ApiHandlerFunctionName"])["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == (
        f"arn:aws:execute-api:us-east-1:123456789012:{api_id}/v1/POST/consumo"
    )


def test_file_drop_function_on_moto(ingest: dict, core: dict) -> None:  # noqa: F811
    out, core_out = _outputs(ingest["stack"]), _outputs(core["stack"])
    lam = client("lambda")
    config = lam.get_function_configuration(FunctionName=out["FileDropFunctionName"])
    assert config["Handler"] == "feedlot_pipeline.lambdas.s3_handler.handler"
    assert config["Role"] == out["FileDropRoleArn"]
    env = config["Environment"]["Variables"]
    assert env["FEEDLOT_LANDING_BUCKET"] == core["names"]["LandingBucketName"]
    assert env["FEEDLOT_LARGE_FILE_QUEUE"] == out["LargeFileQueueUrl"]
    assert env["FEEDLOT_SENSOR_QUEUE"] == core_out["SensorQueueUrl"]
    policy = json.loads(lam.get_policy(FunctionName=out["FileDropFunctionName"])["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == core_out["LandingBucketArn"]

    iam = client("iam")
    role = out["FileDropRoleArn"].rsplit("/", 1)[1]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    by_sid = {
        s["Sid"]: s
        for s in _policy_document(
            iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        )["Statement"]
        if s is not None  # moto keeps a false !If … AWS::NoValue statement as null
    }
    assert not any(sid.startswith("VpcNetworkInterfaces") for sid in by_sid)
    assert by_sid["ReadDroppedFiles"]["Resource"] == f"{core_out['LandingBucketArn']}/incoming/*"
    assert by_sid["HandOffLargeFiles"]["Resource"] == out["LargeFileQueueArn"]
    assert by_sid["OnFailureDestination"]["Resource"] == core_out["FailureTopicArn"]


def test_firehose_role_on_moto(ingest: dict, core: dict) -> None:  # noqa: F811
    out, core_out = _outputs(ingest["stack"]), _outputs(core["stack"])
    iam = client("iam")
    role = out["FirehoseDeliveryRoleArn"].rsplit("/", 1)[1]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = _policy_document(
        iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    )
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    landing = core_out["LandingBucketArn"]
    assert by_sid["WriteDeliveryAndErrorPrefixes"]["Resource"] == [
        f"{landing}/incoming/firehose/*",
        f"{landing}/firehose-errors/*",
    ]
    # moto skips AWS::KinesisFirehose::DeliveryStream: the stream itself is checked statically.
    with pytest.raises(client("firehose").exceptions.ResourceNotFoundException):
        client("firehose").describe_delivery_stream(
            DeliveryStreamName=ingest["names"]["FirehoseStreamName"]
        )


def test_large_file_queue_on_moto(ingest: dict) -> None:
    out = _outputs(ingest["stack"])
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=out["LargeFileQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": out["LargeFileDlqArn"],
        "maxReceiveCount": 10,
    }
    assert attrs["SqsManagedSseEnabled"] == "true"


def test_s3_handler_hands_off_large_files_to_the_stack_queue(
    ingest: dict,
    core: dict,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real S3 Lambda code, configured from both stacks' outputs (as stack_env.py prints
    them), sends a large file to the stack's large-file queue."""
    from feedlot_pipeline.lambdas import s3_handler
    from feedlot_pipeline_tests.helpers import Context

    module = stack_env_module()
    env = {**module.stack_env(core["stack_name"]), **module.stack_env(ingest["stack_name"])}
    assert set(env) >= INGEST_ENV - {"FEEDLOT_FIREHOSE_STREAM"}  # moto drops that output
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FEEDLOT_FILEDROP_MAX_BYTES", "10")
    key = f"{env['FEEDLOT_LANDING_INPUT_PREFIX']}big/{uuid.uuid4().hex}.jsonl"
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": env["FEEDLOT_LANDING_BUCKET"]},
                    "object": {"key": key.replace("/", "%2F"), "size": 1000, "eTag": "abc"},
                },
            }
        ]
    }
    (result,) = s3_handler.handler(event, Context())["files"]
    assert result["status"] == "large_file"
    messages = client("sqs").receive_message(
        QueueUrl=env["FEEDLOT_LARGE_FILE_QUEUE"], MaxNumberOfMessages=10
    )["Messages"]
    bodies = [json.loads(m["Body"]) for m in messages]
    assert [(b["bucket"], b["key"], b["size"]) for b in bodies] == [
        (env["FEEDLOT_LANDING_BUCKET"], key, 1000)
    ]


def test_iam_stack_grants_the_large_file_queues(ingest: dict, core: dict) -> None:  # noqa: F811
    out = _outputs(ingest["stack"])
    stack = _create(
        f"{core['tag']}-iam-ingest",
        "iam.yaml",
        {
            "CoreStackName": core["stack_name"],
            "LargeFileQueueName": ingest["names"]["LargeFileQueueName"],
            "LargeFileDlqName": ingest["names"]["LargeFileDlqName"],
        },
    )
    iam_out = _outputs(stack)
    iam = client("iam")
    policy = iam.get_policy(PolicyArn=iam_out["DagsterAccessPolicyArn"])["Policy"]
    version = iam.get_policy_version(
        PolicyArn=iam_out["DagsterAccessPolicyArn"], VersionId=policy["DefaultVersionId"]
    )
    by_sid = {
        s["Sid"]: s for s in _policy_document(version["PolicyVersion"]["Document"])["Statement"]
    }
    # The ARNs iam.yaml builds from the names are the queues ingest.yaml created.
    assert by_sid["DrainLargeFileQueue"]["Resource"] == out["LargeFileQueueArn"]
    assert by_sid["ParkPoisonLargeFileMessages"]["Resource"] == out["LargeFileDlqArn"]


def test_stack_env_merges_core_and_ingest(
    ingest: dict,
    core: dict,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = stack_env_module()
    assert module.main([core["stack_name"], ingest["stack_name"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = _outputs(ingest["stack"])
    assert f"export FEEDLOT_LARGE_FILE_QUEUE={out['LargeFileQueueUrl']}" in lines
    assert f"export FEEDLOT_INGEST_API_URL={out['IngestApiUrl']}" in lines
    assert any(line.startswith("export FEEDLOT_SENSOR_QUEUE=") for line in lines)
    # Same value twice is fine; two stacks disagreeing on a variable is refused.
    assert module.merge_envs({"a": {"X": "1"}, "b": {"X": "1", "Y": "2"}}) == {"X": "1", "Y": "2"}
    with pytest.raises(ValueError, match="X differs between stacks a and b"):
        module.merge_envs({"a": {"X": "1"}, "b": {"X": "2"}})
