"""deploy/cloudformation/backups.yaml: cfn-lint clean, least privilege bound to the job's tags,
in step with the code's defaults, and creatable on moto (which skips the DLM policy itself).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from feedlot_pipeline.backups.snapshots import (
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    SNAPSHOT_TAG_KEYS,
)
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import DEFAULTS
from feedlot_pipeline_tests.deploy import cfn
from feedlot_pipeline_tests.deploy.cfn import (
    TEMPLATE_DIR,
    as_list,
    iam_problems,
    identity_policies,
    load_template,
    render,
    statements,
)
from feedlot_pipeline_tests.deploy.test_cfn_lint import cfn_lint

# EC2 Describe* actions have no resource-level permissions: AWS accepts only Resource "*" (both
# statements confine them with aws:RequestedRegion); cfn.STAR_RESOURCE_ACTIONS lists them.
EC2_DESCRIBE_ACTIONS = {"ec2:DescribeVolumes", "ec2:DescribeSnapshots", "ec2:DescribeInstances"}
assert EC2_DESCRIBE_ACTIONS <= cfn.STAR_RESOURCE_ACTIONS

PATH = TEMPLATE_DIR / "backups.yaml"
TEMPLATE = load_template(PATH)
SNAPSHOT_ARN = "arn:${AWS::Partition}:ec2:${AWS::Region}::snapshot/*"
VOLUME_ARN = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:volume/*"


def _document(where_prefix: str) -> dict[str, Any]:
    (document,) = [d for w, d in identity_policies(TEMPLATE) if w.startswith(where_prefix)]
    return document


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements(document)}


def _grants(document: dict[str, Any]) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for stmt in statements(document):
        for action in as_list(stmt["Action"]):
            grants.setdefault(action, set()).update(render(r) for r in as_list(stmt["Resource"]))
    return grants


def test_backups_template_passes_cfn_lint() -> None:
    result = cfn_lint(PATH)
    assert result.returncode == 0, result.stdout + result.stderr


def test_backups_template_is_least_privilege() -> None:
    assert iam_problems(TEMPLATE) == []
    for _, document in identity_policies(TEMPLATE):
        for stmt in statements(document):
            if "*" in as_list(stmt["Resource"]):
                assert set(as_list(stmt["Action"])) <= EC2_DESCRIBE_ACTIONS
                region = stmt["Condition"]["StringEquals"]["aws:RequestedRegion"]
                assert render(region) == "${AWS::Region}"


def test_job_policy_grants_exactly_what_snapshots_py_calls() -> None:
    document = _document("EbsBackupJobPolicy")
    assert _grants(document) == {
        "ec2:DescribeVolumes": {"*"},
        "ec2:DescribeSnapshots": {"*"},
        "ec2:CreateSnapshot": {VOLUME_ARN, SNAPSHOT_ARN},
        # Only for CreateSnapshot's TagSpecifications.
        "ec2:CreateTags": {SNAPSHOT_ARN},
        "ec2:DeleteSnapshot": {SNAPSHOT_ARN},
    }
    sid = _by_sid(document)
    volume = sid["SnapshotOnlyTaggedVolumes"]["Condition"]["StringEquals"]
    assert volume == {
        f"aws:ResourceTag/{DEFAULTS['FEEDLOT_BACKUP_TAG_KEY']}": {"Ref": "BackupTagValue"}
    }
    create = sid["CreateOnlyTaggedSnapshots"]["Condition"]
    assert create["StringEquals"] == {f"aws:RequestTag/{MANAGED_BY_KEY}": MANAGED_BY_VALUE}
    assert set(create["ForAllValues:StringEquals"]["aws:TagKeys"]) == set(SNAPSHOT_TAG_KEYS)
    tag = sid["TagOnlyAtSnapshotCreation"]["Condition"]["StringEquals"]
    assert tag["ec2:CreateAction"] == "CreateSnapshot"
    delete = sid["DeleteOnlyOwnSnapshots"]["Condition"]["StringEquals"]
    assert delete == {f"aws:ResourceTag/{MANAGED_BY_KEY}": MANAGED_BY_VALUE}


def test_dlm_policy_matches_the_job_and_keeps_out_of_its_way() -> None:
    params = TEMPLATE["Parameters"]
    assert params["BackupTagValue"]["Default"] == DEFAULTS["FEEDLOT_BACKUP_TAG_VALUE"]
    assert str(params["RetainCount"]["Default"]) == DEFAULTS["FEEDLOT_BACKUP_KEEP"]
    # FEEDLOT_BACKUP_CRON "0 3 * * *" ↔ DLM's daily 03:00 UTC.
    minute, hour, *_ = DEFAULTS["FEEDLOT_BACKUP_CRON"].split()
    assert params["SnapshotTimeUtc"]["Default"] == f"{int(hour):02d}:{int(minute):02d}"
    # DLM's snapshots carry a different managed-by value, so the job never prunes them.
    assert params["DlmManagedByValue"]["Default"] != MANAGED_BY_VALUE

    details = TEMPLATE["Resources"]["EbsBackupLifecyclePolicy"]["Properties"]["PolicyDetails"]
    assert details["ResourceTypes"] == ["VOLUME"]
    assert details["TargetTags"] == [
        {"Key": DEFAULTS["FEEDLOT_BACKUP_TAG_KEY"], "Value": {"Ref": "BackupTagValue"}}
    ]
    (schedule,) = details["Schedules"]
    assert schedule["CreateRule"]["Interval"] == 24
    assert schedule["RetainRule"] == {"Count": {"Ref": "RetainCount"}}
    assert schedule["CopyTags"] is True
    assert schedule["TagsToAdd"] == [{"Key": MANAGED_BY_KEY, "Value": {"Ref": "DlmManagedByValue"}}]

    dlm = _by_sid(_document("DlmRole"))
    delete = dlm["DeleteOnlyOwnSnapshots"]["Condition"]["StringEquals"]
    assert delete == {f"aws:ResourceTag/{MANAGED_BY_KEY}": {"Ref": "DlmManagedByValue"}}
    trust = TEMPLATE["Resources"]["DlmRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "dlm.amazonaws.com"}]


def test_stack_on_moto_attaches_the_job_policy(moto_endpoint: str) -> None:
    """moto skips AWS::DLM::LifecyclePolicy; the roles and the job's policy are created."""
    iam = client("iam")
    role = f"dagster-{uuid.uuid4().hex[:8]}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
    stack = f"feedlot-t{uuid.uuid4().hex[:8]}-backups"
    cloudformation = client("cloudformation")
    cloudformation.create_stack(
        StackName=stack,
        TemplateBody=PATH.read_text(),
        Parameters=[{"ParameterKey": "DagsterRoleName", "ParameterValue": role}],
        Capabilities=["CAPABILITY_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }
    policy_arn = outputs["EbsBackupJobPolicyArn"]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [policy_arn]

    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]
    body = document["Document"]
    body = json.loads(body) if isinstance(body, str) else body
    resources = {r for s in body["Statement"] for r in as_list(s["Resource"])}
    account = client("sts").get_caller_identity()["Account"]
    assert resources == {
        "*",
        f"arn:aws:ec2:us-east-1:{account}:volume/*",
        "arn:aws:ec2:us-east-1::snapshot/*",
    }
