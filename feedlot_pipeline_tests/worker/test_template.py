"""deploy/cloudformation/worker.yaml grants exactly what the dispatch and the worker use."""

from __future__ import annotations

from feedlot_pipeline_tests.deploy.cfn import (
    TEMPLATE_DIR,
    as_list,
    iam_problems,
    identity_policies,
    load_template,
    render,
    statements,
)

WORKER = load_template(TEMPLATE_DIR / "worker.yaml")
PROCESSED = "import:${CoreStackName}-ProcessedBucketArn"


def _grants(where_prefix: str) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for where, document in identity_policies(WORKER):
        if where.startswith(where_prefix):
            for stmt in statements(document):
                for action in as_list(stmt["Action"]):
                    grants.setdefault(action, set()).update(
                        str(render(r)) for r in as_list(stmt["Resource"])
                    )
    return grants


def test_least_privilege_rules_pass() -> None:
    assert iam_problems(WORKER) == []


def test_dagster_sends_only_the_worker_document_to_tagged_instances() -> None:
    grants = _grants("WorkerDispatchPolicy")
    assert grants["ssm:SendCommand"] == {
        "arn:${AWS::Partition}:ssm:${AWS::Region}::document/${WorkerDocumentName}",
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*",
    }
    (document,) = [d for w, d in identity_policies(WORKER) if w == "WorkerDispatchPolicy"]
    by_sid = {s["Sid"]: s for s in statements(document)}
    tag = by_sid["SendToWorkerInstancesOnly"]["Condition"]["StringEquals"]
    assert render(tag["ssm:resourceTag/Role"]) == "${WorkerTagValue}"
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        assert grants[action] == {f"{PROCESSED}/${{PipesPrefix}}*"}, action
    assert set(grants) == {
        "ssm:SendCommand",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
        "ssm:CancelCommand",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:ListBucket",
    }
    assert WORKER["Parameters"]["WorkerDocumentName"]["Default"] == "AWS-RunShellScript"
    assert WORKER["Parameters"]["PipesPrefix"]["Default"] == "pipes/"


def test_worker_reads_input_writes_output_raw_zone_and_pipes_only() -> None:
    grants = _grants("WorkerRole/worker-data")
    assert grants["s3:PutObject"] == {
        f"{PROCESSED}/${{OutputPrefix}}*",
        f"{PROCESSED}/${{PipesPrefix}}*",
        "import:${CoreStackName}-LakeBucketArn/historico_diario/*",
    }
    assert "import:${CoreStackName}-LandingBucketArn/${InputPrefix}*" in grants["s3:GetObject"]
    assert not any("s3:Delete" in a for a in grants)
    role = WORKER["Resources"]["WorkerRole"]["Properties"]
    assert "ManagedPolicyArns" not in role  # the SSM core subset is inline
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert trust == {"Service": "ec2.amazonaws.com"}


def test_cancel_command_is_alone_on_its_star_and_region_confined() -> None:
    # ssm:CancelCommand has no resource type (so no ARN can scope it, issue 11 point 8): its "*"
    # carries nothing else, and only this region's commands.
    (document,) = [d for w, d in identity_policies(WORKER) if w == "WorkerDispatchPolicy"]
    (cancel,) = [s for s in statements(document) if "ssm:CancelCommand" in as_list(s["Action"])]
    assert as_list(cancel["Action"]) == ["ssm:CancelCommand"]
    assert cancel["Resource"] == "*"
    assert cancel["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}
    # Everything else this policy grants on "*" only reads a command's status.
    star = {
        a
        for s in statements(document)
        if "*" in as_list(s["Resource"])
        for a in as_list(s["Action"])
    }
    assert star == {"ssm:CancelCommand", "ssm:GetCommandInvocation", "ssm:ListCommandInvocations"}
