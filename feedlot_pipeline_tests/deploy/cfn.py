"""Reading the CloudFormation templates in deploy/ and the policy rules they must keep.

The rules are functions returning a list of problems (empty when the template is fine), so the
tests can show that each rule does catch a bad template as well as pass the real ones.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "deploy" / "cloudformation"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.yaml"))

# Actions AWS authorises only with Resource "*" (no resource-level permissions in the service
# authorization reference). A statement may use Resource "*" only with these actions, and only
# with a condition narrowing it.
STAR_RESOURCE_ACTIONS = {
    # No resource types; confined with the cloudwatch:namespace condition key.
    "cloudwatch:PutMetricData",
    # EC2 Describe* have no resource types (backups.yaml; confined with aws:RequestedRegion).
    "ec2:DescribeVolumes",
    "ec2:DescribeSnapshots",
    "ec2:DescribeInstances",
    # worker.yaml (confined with aws:RequestedRegion): the SSM agent's message channels have no
    # resource types; a command's invocations/cancel are not addressable by ARN before it exists
    # (ssm:CancelCommand has no resource type and no condition key at all, so it cannot be
    # scoped to the worker's instance or document; it sits alone in its statement).
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:OpenControlChannel",
    "ssm:GetCommandInvocation",
    "ssm:ListCommandInvocations",
    "ssm:CancelCommand",
    # Lambda in a VPC (core, ingest, database rotation; region-confined): Describe* of network
    # interfaces and subnets have no resource types. The daemon's EcsRunLauncher also describes
    # its own task's network interface (dagster-ecs.yaml).
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    # database.yaml rotation: generates a password, touches no resource (no resource types).
    "secretsmanager:GetRandomPassword",
    # dagster-ecs.yaml: the ECR login token is registry-wide; DescribeTaskDefinition has no
    # resource types; ECS Exec's SSM channels (webserver) have none either.
    "ecr:GetAuthorizationToken",
    "ecs:DescribeTaskDefinition",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenDataChannel",
}

IDENTITY_POLICY_TYPES = {"AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"}
RESOURCE_POLICY_TYPES = {
    "AWS::S3::BucketPolicy": "Bucket",
    "AWS::SQS::QueuePolicy": "Queues",
    "AWS::SNS::TopicPolicy": "Topics",
}
PUBLIC_ACCESS_BLOCK = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls")
PUBLIC_ACCESS_BLOCK_ALL = (*PUBLIC_ACCESS_BLOCK, "RestrictPublicBuckets")
DYNAMIC_SECRET = re.compile(r"^\{\{resolve:(secretsmanager|ssm-secure):.+\}\}$")


# --- loading -----------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short forms into their long JSON forms."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    # _CfnLoader is a SafeLoader: the tags above are the only additions.
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def stack_env_module() -> ModuleType:
    """deploy/stack_env.py (a script, not a package module), loaded from its path."""
    spec = importlib.util.spec_from_file_location(
        "feedlot_stack_env", REPO / "deploy" / "stack_env.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resources(template: dict, *types: str) -> Iterator[tuple[str, dict]]:
    for logical_id, resource in template.get("Resources", {}).items():
        if not types or resource["Type"] in types:
            yield logical_id, resource


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def render(value: Any) -> Any:
    """A readable string for an intrinsic value: ``${Bucket.Arn}/x/*``, ``import:${Stack}-X``.

    Enough to compare a policy's resources with what they should be without deploying.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return f"${{{arg}}}"
        if key == "Fn::GetAtt":
            return "${" + ".".join(as_list(arg)) + "}"
        if key == "Fn::ImportValue":
            return f"import:{render(arg)}"
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return arg
            text, variables = arg
            for name, var_value in variables.items():
                text = text.replace(f"${{{name}}}", str(render(var_value)))
            return text
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(str(render(p)) for p in parts)
    return value


# --- IAM identity policies ---------------------------------------------------------------------


def identity_policies(template: dict) -> Iterator[tuple[str, dict]]:
    """(where, policy document) of every IAM identity policy the template defines."""
    for logical_id, resource in resources(template, *IDENTITY_POLICY_TYPES):
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield f"{logical_id}/{policy.get('PolicyName')}", policy["PolicyDocument"]
        else:
            yield logical_id, props["PolicyDocument"]


def _branches(item: Any) -> list[Any]:
    """A statement, or both branches of an ``Fn::If`` around one (``AWS::NoValue`` dropped)."""
    if isinstance(item, dict) and set(item) == {"Fn::If"}:
        _, when_true, when_false = item["Fn::If"]
        return [
            branch
            for value in (when_true, when_false)
            for branch in _branches(value)
            if branch != {"Ref": "AWS::NoValue"}
        ]
    return [item]


def statements(document: dict) -> list[dict]:
    """Every statement, including each branch of a conditional (``Fn::If``) statement."""
    return [stmt for item in as_list(document.get("Statement", [])) for stmt in _branches(item)]


def _is_wildcard_action(action: Any) -> bool:
    # "*", "s3:*", "sqs:*" and any other service-wide or prefix wildcard ("s3:Get*").
    return isinstance(action, str) and "*" in action


def iam_problems(template: dict) -> list[str]:
    """Least-privilege rules for every identity policy and role of one template."""
    problems: list[str] = []
    for where, document in identity_policies(template):
        for i, stmt in enumerate(statements(document)):
            at = f"{where} statement {stmt.get('Sid', i)}"
            if stmt.get("Effect") != "Allow":
                continue
            for forbidden in ("NotAction", "NotResource", "NotPrincipal"):
                if forbidden in stmt:
                    problems.append(f"{at}: Allow with {forbidden} grants by exclusion")
            actions = as_list(stmt.get("Action", []))
            wild = [a for a in actions if _is_wildcard_action(a)]
            if wild:
                problems.append(f"{at}: wildcard action(s) {wild}")
            resources_ = [render(r) for r in as_list(stmt.get("Resource", []))]
            if not resources_:
                problems.append(f"{at}: no Resource")
            if "*" in resources_:
                unexplained = sorted(set(actions) - STAR_RESOURCE_ACTIONS)
                if unexplained:
                    problems.append(
                        f"{at}: Resource '*' for {unexplained}, which have resource-level "
                        "permissions (or add them to STAR_RESOURCE_ACTIONS with the reason)"
                    )
                if not stmt.get("Condition"):
                    problems.append(f"{at}: Resource '*' without a narrowing Condition")
    for logical_id, resource in resources(template, "AWS::IAM::Role"):
        props = resource.get("Properties", {})
        for arn in as_list(props.get("ManagedPolicyArns", [])):
            if isinstance(arn, str) and ":iam::aws:policy/" in arn:
                problems.append(f"{logical_id}: AWS managed policy {arn} is not least privilege")
        trust = props.get("AssumeRolePolicyDocument", {})
        for stmt in statements(trust):
            principal = stmt.get("Principal")
            if not isinstance(principal, dict) or set(principal) != {"Service"}:
                problems.append(f"{logical_id}: trust policy must name AWS services only")
    return problems


# --- resource policies and buckets ----------------------------------------------------------------


def _is_public_principal(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any("*" in as_list(v) for v in principal.values())
    return False


def _denies_insecure_transport(stmt: dict) -> bool:
    condition = stmt.get("Condition", {}).get("Bool", {})
    value = condition.get("aws:SecureTransport")
    return (
        stmt.get("Effect") == "Deny"
        and _is_public_principal(stmt.get("Principal"))
        and str(value).lower() == "false"
    )


def resource_policy_problems(template: dict) -> list[str]:
    """No bucket, queue or topic policy may allow anyone ('*') anything."""
    problems = []
    for logical_id, resource in resources(template, *RESOURCE_POLICY_TYPES):
        for i, stmt in enumerate(statements(resource["Properties"]["PolicyDocument"])):
            if stmt.get("Effect") == "Allow" and _is_public_principal(stmt.get("Principal")):
                problems.append(f"{logical_id} statement {stmt.get('Sid', i)}: public Allow")
    return problems


def _policy_targets(resource: dict) -> list[Any]:
    key = RESOURCE_POLICY_TYPES[resource["Type"]]
    return [render(t) for t in as_list(resource["Properties"][key])]


def tls_only_targets(template: dict, policy_type: str, every_action: str) -> dict[str, list[str]]:
    """Target (rendered) → resources covered by TLS-deny statements of ``every_action``."""
    covered: dict[str, list[str]] = {}
    for _, resource in resources(template, policy_type):
        denies = [
            s
            for s in statements(resource["Properties"]["PolicyDocument"])
            if _denies_insecure_transport(s) and every_action in as_list(s.get("Action"))
        ]
        for target in _policy_targets(resource):
            for stmt in denies:
                covered.setdefault(target, []).extend(
                    str(render(r)) for r in as_list(stmt.get("Resource", []))
                )
    return covered


def bucket_problems(template: dict) -> list[str]:
    """Every bucket: all public-access blocks on, no ACLs, SSE, and a TLS-only bucket policy."""
    problems = []
    tls = tls_only_targets(template, "AWS::S3::BucketPolicy", "s3:*")
    for logical_id, resource in resources(template, "AWS::S3::Bucket"):
        props = resource.get("Properties", {})
        block = props.get("PublicAccessBlockConfiguration", {})
        off = [k for k in PUBLIC_ACCESS_BLOCK_ALL if block.get(k) is not True]
        if off:
            problems.append(f"{logical_id}: public access block not on for {off}")
        if props.get("AccessControl", "Private") != "Private":
            problems.append(f"{logical_id}: canned ACL {props['AccessControl']}")
        rules = props.get("OwnershipControls", {}).get("Rules", [])
        if [r.get("ObjectOwnership") for r in rules] != ["BucketOwnerEnforced"]:
            problems.append(f"{logical_id}: ACLs not disabled (BucketOwnerEnforced)")
        if not props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration"):
            problems.append(f"{logical_id}: no default encryption")
        covered = tls.get(f"${{{logical_id}}}", [])
        for needed in (f"${{{logical_id}.Arn}}", f"${{{logical_id}.Arn}}/*"):
            if needed not in covered:
                problems.append(f"{logical_id}: no TLS-only bucket policy statement on {needed}")
    return problems


def queue_problems(template: dict) -> list[str]:
    """Every queue: encrypted at rest, and TLS-only through a queue policy."""
    problems = []
    tls = tls_only_targets(template, "AWS::SQS::QueuePolicy", "sqs:*")
    for logical_id, resource in resources(template, "AWS::SQS::Queue"):
        props = resource.get("Properties", {})
        if props.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in props:
            problems.append(f"{logical_id}: not encrypted at rest")
        if f"${{{logical_id}.Arn}}" not in tls.get(f"${{{logical_id}}}", []):
            problems.append(f"{logical_id}: no TLS-only queue policy")
    return problems


SECRET_LOOKING = re.compile(r"URL$|PASSWORD|SECRET|TOKEN")
# Variables that name where a secret is, not what it is: a Secrets Manager ARN (or a reference
# to a parameter/resource holding one) for *_SECRET, a JSON key name for *_SECRET_KEY.
SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:")
JSON_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Plain URLs that carry no credentials (endpoints of queues, APIs, the Dagster UI's address for
# alert links); everything else ending in URL must come from a secret.
NON_SECRET_URLS = re.compile(
    r"_QUEUE_URL$|_API_URL$|_DLQ_URL$|^AWS_ENDPOINT_URL|^FEEDLOT_DAGSTER_UI_URL$"
)


def _names_a_secret(name: str, value: Any) -> bool:
    text = render(value)
    if not isinstance(text, str):
        return False
    is_reference = isinstance(value, dict) and ("Ref" in value or "Fn::ImportValue" in value)
    if name.endswith("_SECRET"):
        return is_reference or bool(SECRET_ARN.match(text))
    if name.endswith("_SECRET_KEY") and not name.startswith("AWS_"):
        return is_reference or bool(JSON_KEY_NAME.match(text))
    return False


def secret_problems(template: dict) -> list[str]:
    """Secret-looking variables: dynamic references (Lambda) or ECS ``secrets``, never values.

    A Lambda variable named like a secret must be a ``{{resolve:…}}`` reference or name a
    secret (ARN / JSON key, see ``_names_a_secret``). An ECS container may not carry one in its
    plain ``Environment`` at all, except those that name a secret: the value belongs in
    ``Secrets`` (injected by the execution role).
    """
    problems = []
    for logical_id, resource in resources(template, "AWS::Lambda::Function"):
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            if SECRET_LOOKING.search(name) and not _names_a_secret(name, value):
                text = render(value)
                if not (isinstance(text, str) and DYNAMIC_SECRET.match(text)):
                    problems.append(f"{logical_id}: {name} is not a secret reference: {text!r}")
    for logical_id, resource in resources(template, "AWS::ECS::TaskDefinition"):
        for container in resource["Properties"].get("ContainerDefinitions", []):
            for entry in container.get("Environment", []):
                name, value = entry["Name"], entry["Value"]
                if NON_SECRET_URLS.search(name) or not SECRET_LOOKING.search(name):
                    continue
                if not _names_a_secret(name, value):
                    problems.append(
                        f"{logical_id}/{container['Name']}: {name} in plain Environment "
                        "(use Secrets)"
                    )
    return problems
