"""Static checks of the stateful and networked half: network, database, registry, dagster-ecs,
worker-instance, and how all stacks wire into each other.

moto's CloudFormation cannot create VPC endpoints, RDS with managed secrets, ECS services or
load balancers the way AWS does, so these templates are checked as data: what each resource
must be (private, encrypted, tagged), what each role may do (exactly), and that every value one
stack imports is exported by the stack its parameter names. The generic rules of cfn.py
(least privilege, secrets, buckets, queues) already run over these templates in
test_policies.py, and cfn-lint and checkov over all of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from feedlot_pipeline.core.settings import DEFAULTS, DOCS
from feedlot_pipeline_tests.deploy.cfn import (
    REPO,
    TEMPLATE_DIR,
    as_list,
    identity_policies,
    load_template,
    render,
    resources,
    statements,
)
from feedlot_pipeline_tests.deploy.test_secret_rotation import rotation

NETWORK = load_template(TEMPLATE_DIR / "network.yaml")
DATABASE = load_template(TEMPLATE_DIR / "database.yaml")
ECS = load_template(TEMPLATE_DIR / "dagster-ecs.yaml")
WORKER_INSTANCE = load_template(TEMPLATE_DIR / "worker-instance.yaml")
INSTANCE_YAML = yaml.safe_load((REPO / "deploy" / "dagster" / "dagster.yaml").read_text())
WORKSPACE_YAML = yaml.safe_load((REPO / "deploy" / "dagster" / "workspace.yaml").read_text())

# Which template a "<X>StackName" parameter points at.
STACK_PARAMETERS = {
    "NetworkStackName": "network.yaml",
    "DatabaseStackName": "database.yaml",
    "RegistryStackName": "registry.yaml",
    "CoreStackName": "core.yaml",
    "IamStackName": "iam.yaml",
    "WorkerStackName": "worker.yaml",
    "AnalyticsStackName": "analytics.yaml",
    "MonitoringStackName": "monitoring.yaml",
}


def _walk(value: Any):
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _grants(document: dict) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for stmt in statements(document):
        if stmt["Effect"] == "Allow":
            for action in as_list(stmt["Action"]):
                grants.setdefault(action, set()).update(
                    str(render(r)) for r in as_list(stmt["Resource"])
                )
    return grants


def _role(template: dict, role: str) -> dict[str, set[str]]:
    documents = [d for where, d in identity_policies(template) if where.startswith(f"{role}/")]
    merged: dict[str, set[str]] = {}
    for document in documents:
        for action, targets in _grants(document).items():
            merged.setdefault(action, set()).update(targets)
    return merged


# --- wiring between stacks ----------------------------------------------------------------------


def test_every_import_is_exported_by_the_stack_its_parameter_names() -> None:
    exports: dict[str, set[str]] = {}
    for name in set(STACK_PARAMETERS.values()):
        outputs = load_template(TEMPLATE_DIR / name).get("Outputs", {})
        exports[name] = {
            str(render(o["Export"]["Name"])).replace("${AWS::StackName}-", "")
            for o in outputs.values()
            if "Export" in o
        }
    checked = 0
    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        template = load_template(path)
        for node in _walk(template.get("Resources", {})):
            if "Fn::ImportValue" not in node:
                continue
            text = str(render(node["Fn::ImportValue"]))
            match = re.fullmatch(r"\$\{(?P<param>\w+StackName)\}-(?P<export>\w+)", text)
            assert match, (path.name, text)
            param = match.group("param")
            assert param in template["Parameters"], (path.name, param)
            exporter = STACK_PARAMETERS[param]
            assert match.group("export") in exports[exporter], (path.name, text, exporter)
            checked += 1
    assert checked > 50  # the new stacks do import a lot


def test_stack_default_names_follow_one_convention() -> None:
    # feedlot-<env>-<concern>, as in deploy/README.md's commands.
    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        for param, spec in load_template(path).get("Parameters", {}).items():
            if param in STACK_PARAMETERS:
                concern = STACK_PARAMETERS[param].removesuffix(".yaml")
                assert spec["Default"] == f"feedlot-dev-{concern}", (path.name, param)


# --- network.yaml -------------------------------------------------------------------------------


def test_network_has_no_internet_route() -> None:
    types = {r["Type"] for _, r in resources(NETWORK)}
    for forbidden in (
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EgressOnlyInternetGateway",
        "AWS::EC2::Route",
        "AWS::EC2::TransitGatewayAttachment",
    ):
        assert forbidden not in types
    for _, subnet in resources(NETWORK, "AWS::EC2::Subnet"):
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_network_has_an_endpoint_for_every_api_the_platform_calls() -> None:
    endpoints = {}
    for logical_id, ep in resources(NETWORK, "AWS::EC2::VPCEndpoint"):
        props = ep["Properties"]
        service = str(render(props["ServiceName"])).rsplit(".", 1)[-1]
        if service in {"api", "dkr"}:
            service = "ecr." + service
        endpoints[service] = props
        if props["VpcEndpointType"] == "Interface":
            assert props["PrivateDnsEnabled"] is True, logical_id
            assert len(props["SubnetIds"]) == 2, logical_id
            assert [render(g) for g in props["SecurityGroupIds"]] == ["${EndpointSecurityGroup}"]
    assert endpoints["s3"]["VpcEndpointType"] == "Gateway"
    # S3/SQS/SNS/SSM/Secrets Manager/CloudWatch (the issue), the SSM agent's channels, what
    # Fargate needs to pull (ECR), what the launcher and the backup job call (ECS, EC2) and the
    # curated zone's catalog the analytics runs keep (Glue).
    assert set(endpoints) == {
        "s3",
        "sqs",
        "sns",
        "ssm",
        "ssmmessages",
        "ec2messages",
        "glue",
        "secretsmanager",
        "logs",
        "monitoring",
        "ecr.api",
        "ecr.dkr",
        "ecs",
        "ec2",
    }


def _rules(kind: str) -> list[dict]:
    """Every ingress or egress rule: inline ones with their group, and standalone ones."""
    out = []
    for logical_id, group in resources(NETWORK, "AWS::EC2::SecurityGroup"):
        for rule in group["Properties"].get(f"SecurityGroup{kind}", []):
            out.append({**rule, "GroupId": {"Ref": logical_id}})
    for _, rule in resources(NETWORK, f"AWS::EC2::SecurityGroup{kind}"):
        out.append(rule["Properties"])
    return out


def test_security_groups_admit_only_what_the_flow_needs() -> None:
    for rule in _rules("Ingress"):
        assert rule.get("CidrIp") != "0.0.0.0/0", rule
    wide_egress = [r for r in _rules("Egress") if r.get("CidrIp") == "0.0.0.0/0"]
    assert wide_egress and all(
        (r["IpProtocol"], r["FromPort"], r["ToPort"]) == ("tcp", 443, 443) for r in wide_egress
    )
    database_in = {
        render(r["SourceSecurityGroupId"]): (r["FromPort"], r["ToPort"])
        for r in _rules("Ingress")
        if render(r["GroupId"]) == "${DatabaseSecurityGroup}"
    }
    assert database_in == {
        "${LambdaSecurityGroup}": (5432, 5432),
        "${DagsterTaskSecurityGroup}": (5432, 5432),
        "${WorkerSecurityGroup}": (5432, 5432),
    }
    webserver_in = [
        r for r in _rules("Ingress") if render(r["GroupId"]) == "${WebserverSecurityGroup}"
    ]
    assert [(render(r["SourceSecurityGroupId"]), r["FromPort"]) for r in webserver_in] == [
        ("${LoadBalancerSecurityGroup}", 3000)
    ]
    worker_in = [r for r in _rules("Ingress") if render(r["GroupId"]) == "${WorkerSecurityGroup}"]
    assert worker_in == []  # no SSH, nothing: SSM only


# --- database.yaml ------------------------------------------------------------------------------


def test_database_instance_is_private_encrypted_backed_up_and_protected() -> None:
    db = DATABASE["Resources"]["Database"]
    props = db["Properties"]
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in props
    assert render(props["MultiAZ"]) == "${MultiAZ}"
    assert DATABASE["Parameters"]["MultiAZ"]["Default"] == "true"
    assert render(props["DeletionProtection"]) == "${DeletionProtection}"
    assert DATABASE["Parameters"]["DeletionProtection"]["Default"] == "true"
    assert render(props["BackupRetentionPeriod"]) == "${BackupRetentionDays}"
    assert DATABASE["Parameters"]["BackupRetentionDays"]["MinValue"] >= 1
    assert db["DeletionPolicy"] == db["UpdateReplacePolicy"] == "Snapshot"
    assert props["StorageType"] == "gp3"
    params = DATABASE["Resources"]["DbParameterGroup"]["Properties"]["Parameters"]
    assert params["rds.force_ssl"] == "1"
    assert params["password_encryption"] == "scram-sha-256"


def _secret_template(logical_id: str) -> dict:
    text = DATABASE["Resources"][logical_id]["Properties"]["GenerateSecretString"][
        "SecretStringTemplate"
    ]["Fn::Sub"]
    filled = (
        text.replace("${Database.Endpoint.Address}", "db.example")
        .replace("${Database.Endpoint.Port}", "5432")
        .replace("${WarehouseDatabaseName}", "feedlot")
        .replace("${DagsterDatabaseName}", "dagster")
        .replace("${Database.MasterUserSecret.SecretArn}", "arn:aws:secretsmanager:x")
    )
    return json.loads(filled)


def test_secrets_hold_what_the_rotation_function_reads() -> None:
    warehouse = _secret_template("WarehouseSecret")
    storage = _secret_template("DagsterStorageSecret")
    for secret in (warehouse, storage):
        assert set(rotation.REQUIRED_KEYS) <= set(secret)
        assert secret["username"] == rotation.logins(secret["owner"])[0]
        assert secret["sslmode"] == "require"
    # The warehouse speaks psycopg 3; dagster-postgres psycopg2 (no driver suffix).
    assert warehouse["driver"] == "postgresql+psycopg"
    assert storage["driver"] == "postgresql"
    assert warehouse["owner"] != storage["owner"]
    for logical_id in ("WarehouseSecret", "DagsterStorageSecret"):
        generate = DATABASE["Resources"][logical_id]["Properties"]["GenerateSecretString"]
        assert generate["GenerateStringKey"] == "password"
        assert generate["ExcludePunctuation"] is True  # URL-safe without quoting


def test_both_secrets_rotate_with_the_packaged_function() -> None:
    res = DATABASE["Resources"]
    fn = res["RotationFunction"]["Properties"]
    module = fn["Handler"].split(".")[0]
    assert (REPO / "deploy" / "rotation" / f"{module}.py").exists()
    assert fn["Handler"] == f"{module}.handler"
    assert "VpcConfig" in fn
    schedules = {
        render(r["Properties"]["SecretId"]): r
        for _, r in resources(DATABASE, "AWS::SecretsManager::RotationSchedule")
    }
    assert set(schedules) == {"${WarehouseSecret}", "${DagsterStorageSecret}"}
    for schedule in schedules.values():
        props = schedule["Properties"]
        assert render(props["RotationLambdaARN"]) == "${RotationFunction.Arn}"
        assert props["RotateImmediatelyOnUpdate"] is True  # bootstraps logins and databases
    permissions = {
        render(r["Properties"]["SourceArn"])
        for _, r in resources(DATABASE, "AWS::Lambda::Permission")
    }
    assert permissions == set(schedules)


def test_rotation_role_is_scoped() -> None:
    grants = _role(DATABASE, "RotationRole")
    secrets = {"${WarehouseSecret}", "${DagsterStorageSecret}"}
    for action in (
        "secretsmanager:DescribeSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ):
        assert grants[action] == secrets
    assert grants["secretsmanager:GetSecretValue"] == secrets | {
        "${Database.MasterUserSecret.SecretArn}"
    }
    assert grants["secretsmanager:GetRandomPassword"] == {"*"}
    assert not [a for a in grants if a.startswith(("rds:", "kms:", "iam:"))]


# --- dagster-ecs.yaml ---------------------------------------------------------------------------


def _containers() -> dict[str, dict]:
    out = {}
    for logical_id, td in resources(ECS, "AWS::ECS::TaskDefinition"):
        (container,) = td["Properties"]["ContainerDefinitions"]
        out[logical_id] = container
    return out


def _env(container: dict) -> dict[str, str]:
    return {e["Name"]: str(render(e["Value"])) for e in container.get("Environment", [])}


def test_all_tasks_run_the_one_image_as_the_unprivileged_user() -> None:
    containers = _containers()
    assert set(containers) == {
        "CodeServerTaskDefinition",
        "RunTaskDefinition",
        "DaemonTaskDefinition",
        "WebserverTaskDefinition",
    }
    images = {str(render(c["Image"])) for c in containers.values()}
    assert len(images) == 1 and images.pop().endswith(":${ImageTag}")
    for logical_id, container in containers.items():
        assert container["User"] == "10001:10001", logical_id
        props = ECS["Resources"][logical_id]["Properties"]
        assert props["RequiresCompatibilities"] == ["FARGATE"]
        assert props["NetworkMode"] == "awsvpc"
        for secret in container.get("Secrets", []):
            assert str(render(secret["ValueFrom"])).endswith(":url::"), secret


def test_code_server_and_runs_load_the_code_with_the_same_settings() -> None:
    containers = _containers()
    code, run = _env(containers["CodeServerTaskDefinition"]), _env(containers["RunTaskDefinition"])
    assert set(code) == set(run)
    for name in code:
        if name != "FEEDLOT_RUN_TASK_DEFINITION":
            assert code[name] == run[name], name
    documented = set(DOCS)  # every settings class: core, worker, backups, API, local
    own = {
        "FEEDLOT_RUN_TASK_DEFINITION",
        "FEEDLOT_CODE_SERVER_HOST",
        "DAGSTER_HOME",
        "DAGSTER_EVENT_BATCH_SIZE",
    }
    for container in containers.values():
        for name in _env(container):
            assert name in documented | own or name == "FEEDLOT_WAREHOUSE_SECRET", name
    assert code["FEEDLOT_WAREHOUSE_SECRET"] == "import:${DatabaseStackName}-WarehouseSecretArn"
    run_secrets = {s["Name"] for s in containers["RunTaskDefinition"]["Secrets"]}
    assert run_secrets == {"FEEDLOT_WAREHOUSE_URL", "FEEDLOT_DAGSTER_STORAGE_URL"}
    # Defaults agree with the platform's.
    params = ECS["Parameters"]
    assert params["PartitionStart"]["Default"] == DEFAULTS["FEEDLOT_PARTITION_START"]
    assert params["ConsumoMetaRule"]["Default"] == DEFAULTS["FEEDLOT_CONSUMO_META_RULE"]
    assert params["LargeFileQueueUrl"]["Default"] == DEFAULTS["FEEDLOT_LARGE_FILE_QUEUE"]
    assert params["LargeFileDlqUrl"]["Default"] == DEFAULTS["FEEDLOT_LARGE_FILE_DLQ"]


def test_code_server_and_runs_get_the_analytics_and_observability_settings() -> None:
    # What the batched loads, the analytics runs and their sensors read in AWS beyond core's
    # names: without them the code would fall back to local defaults (a topic name, not the
    # stack's ARN; a UI link to 127.0.0.1).
    containers = _containers()
    analytics = load_template(TEMPLATE_DIR / "analytics.yaml")["Parameters"]
    monitoring = load_template(TEMPLATE_DIR / "monitoring.yaml")["Parameters"]
    params = ECS["Parameters"]
    for logical_id in ("CodeServerTaskDefinition", "RunTaskDefinition"):
        env = _env(containers[logical_id])
        assert env["FEEDLOT_PROCESSED_EVENTS_TOPIC"] == (
            "import:${AnalyticsStackName}-ProcessedEventsTopicArn"
        )
        assert env["FEEDLOT_ALERTS_TOPIC"] == "import:${MonitoringStackName}-AlertsTopicArn"
        assert env["FEEDLOT_GLUE_DATABASE"] == "${GlueDatabaseName}"
        assert env["FEEDLOT_CURATED_PREFIX"] == "${CuratedPrefix}"
        assert env["FEEDLOT_METRICS_NAMESPACE"] == "${MetricsNamespace}"
        assert env["DAGSTER_EVENT_BATCH_SIZE"] == "${EventBatchSize}"
        assert "WebLoadBalancer.DNSName" in env["FEEDLOT_DAGSTER_UI_URL"]
    # The same defaults as the platform's settings and the stacks that own the names.
    for parameter, variable, owner in (
        ("GlueDatabaseName", "FEEDLOT_GLUE_DATABASE", analytics),
        ("CuratedPrefix", "FEEDLOT_CURATED_PREFIX", analytics),
        ("MetricsNamespace", "FEEDLOT_METRICS_NAMESPACE", monitoring),
    ):
        assert str(params[parameter]["Default"]) == DEFAULTS[variable], parameter
        assert owner[parameter]["Default"] == params[parameter]["Default"], parameter
    # As the local stack exports it (local/stack.py).
    from feedlot_pipeline.local import stack

    assert f'"DAGSTER_EVENT_BATCH_SIZE": "{params["EventBatchSize"]["Default"]}"' in (
        Path(stack.__file__).read_text()
    )


def test_ecs_matches_the_dagster_instance_and_workspace() -> None:
    containers = _containers()
    (server,) = [e["grpc_server"] for e in WORKSPACE_YAML["load_from"]]
    code = containers["CodeServerTaskDefinition"]
    assert code["PortMappings"] == [{"ContainerPort": server["port"], "Protocol": "tcp"}]
    command = code["Command"]
    assert command[command.index("--location-name") + 1] == server["location_name"]
    assert command[command.index("-p") + 1] == str(server["port"])
    # The launcher's container and the run task definition's.
    launcher = INSTANCE_YAML["run_launcher"]["config"]
    assert containers["RunTaskDefinition"]["Name"] == launcher["container_name"]
    assert ECS["Resources"]["RunTaskDefinition"]["Properties"]["Family"] == {
        "Fn::Sub": "feedlot-${EnvironmentName}-run"
    }
    # Run logs: the instance's S3 prefix is the one the roles are scoped to.
    prefix = INSTANCE_YAML["compute_logs"]["config"]["prefix"]
    assert ECS["Parameters"]["ComputeLogPrefix"]["Default"] == prefix + "/"
    assert INSTANCE_YAML["compute_logs"]["config"]["bucket"] == {"env": "FEEDLOT_PROCESSED_BUCKET"}
    # The network rule that lets the daemon and webserver reach the code server.
    grpc = NETWORK["Resources"]["DagsterGrpcIn"]["Properties"]
    assert grpc["FromPort"] == grpc["ToPort"] == server["port"]


def test_one_daemon_and_an_internal_ui() -> None:
    res = ECS["Resources"]
    daemon = res["DaemonService"]["Properties"]
    assert daemon["DesiredCount"] == 1
    assert daemon["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert daemon["DeploymentConfiguration"]["MinimumHealthyPercent"] == 0
    for _, service in resources(ECS, "AWS::ECS::Service"):
        network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert network["AssignPublicIp"] == "DISABLED"
    alb = res["WebLoadBalancer"]["Properties"]
    assert alb["Scheme"] == "internal"
    assert [render(g) for g in alb["SecurityGroups"]] == [
        "import:${NetworkStackName}-LoadBalancerSecurityGroupId"
    ]
    https = res["WebHttpsListener"]["Properties"]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")


def test_launcher_roles_are_scoped() -> None:
    daemon = _role(ECS, "DaemonTaskRole")
    task = "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${Cluster}/*"
    assert daemon["ecs:RunTask"] == {
        "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:"
        "task-definition/feedlot-${EnvironmentName}-run:*"
    }
    assert daemon["ecs:DescribeTasks"] == daemon["ecs:StopTask"] == {task}
    assert daemon["iam:PassRole"] == {"${RunTaskRole.Arn}", "${ExecutionRole.Arn}"}
    assert not [a for a in daemon if a.startswith(("s3:", "sqs:", "secretsmanager:"))]
    by_sid = {
        s["Sid"]: s
        for _, d in identity_policies(ECS)
        for s in statements(d)
        if s.get("Sid") in {"PassOnlyTheRunRoles", "RunTheRunTaskDefinitionInThisCluster"}
    }
    assert by_sid["PassOnlyTheRunRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    assert render(
        by_sid["RunTheRunTaskDefinitionInThisCluster"]["Condition"]["ArnEquals"]["ecs:cluster"]
    ) == ("${Cluster.Arn}")
    web = _role(ECS, "WebserverTaskRole")
    logs = "import:${CoreStackName}-ProcessedBucketArn/${ComputeLogPrefix}*"
    assert web["s3:GetObject"] == web["s3:DeleteObject"] == {logs}
    assert "ecs:RunTask" not in web
    run = _role(ECS, "RunTaskRole")
    assert run["s3:PutObject"] == {logs}
    # The catalog and notices come with analytics.yaml's policy, not grants of its own.
    assert not [a for a in run if a.startswith(("glue:", "sns:"))]
    res = ECS["Resources"]
    run_managed = [render(a) for a in res["RunTaskRole"]["Properties"]["ManagedPolicyArns"]]
    assert "import:${AnalyticsStackName}-AnalyticsDagsterPolicyArn" in run_managed
    assert "import:${IamStackName}-DagsterAccessPolicyArn" in run_managed
    code = res["CodeServerTaskRole"]["Properties"]
    assert [render(a) for a in code["ManagedPolicyArns"]] == [
        "import:${IamStackName}-DagsterAccessPolicyArn",
        "import:${MonitoringStackName}-DagsterMonitoringPolicyArn",
    ]
    # The sensors that read the warehouse get its one secret, nothing else.
    assert _role(ECS, "CodeServerTaskRole") == {
        "secretsmanager:GetSecretValue": {"import:${DatabaseStackName}-WarehouseSecretArn"}
    }
    # Nobody publishes alerts without the alerts key: no inline sns:Publish left in this stack.
    assert not [a for _, d in identity_policies(ECS) for a in _grants(d) if a == "sns:Publish"]
    execution = _role(ECS, "ExecutionRole")
    assert execution["secretsmanager:GetSecretValue"] == {
        "import:${DatabaseStackName}-WarehouseSecretArn",
        "import:${DatabaseStackName}-DagsterStorageSecretArn",
    }


# --- worker-instance.yaml -----------------------------------------------------------------------


def test_worker_instance_is_ssm_only_with_a_tagged_encrypted_volume() -> None:
    from feedlot_pipeline.core.settings import DEFAULTS as WORKER_DEFAULTS

    res = WORKER_INSTANCE["Resources"]
    instance = res["WorkerInstance"]["Properties"]
    assert "KeyName" not in instance
    tags = {t["Key"]: render(t["Value"]) for t in instance["Tags"]}
    assert tags[WORKER_DEFAULTS["FEEDLOT_WORKER_TAG_KEY"]] == "${WorkerTagValue}"
    assert (
        WORKER_INSTANCE["Parameters"]["WorkerTagValue"]["Default"]
        == (WORKER_DEFAULTS["FEEDLOT_WORKER_TAG_VALUE"])
    )
    template = res["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert template["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] is True for m in template["BlockDeviceMappings"])
    volume = res["DataVolume"]
    assert volume["Properties"]["Encrypted"] is True
    assert volume["Properties"]["VolumeType"] == "gp3"
    assert volume["DeletionPolicy"] == "Snapshot"
    volume_tags = {t["Key"]: render(t["Value"]) for t in volume["Properties"]["Tags"]}
    assert volume_tags["Backup"] == "${BackupTagValue}"  # FEEDLOT_BACKUP_TAG_KEY's default
    user_data = render(instance["UserData"]["Fn::Base64"])
    assert DEFAULTS["FEEDLOT_WORKER_WORKDIR"] == "/mnt/feedlot-data"
    assert "mkdir -p /mnt/feedlot-data" in user_data
    assert "--no-index" in user_data
    venv_feedlot = ECS["Parameters"]["WorkerCommand"]["Default"]
    assert f"ln -sf {venv_feedlot} /usr/local/bin/feedlot" in user_data
    # The same AZ as the instance's subnet, or the attachment fails.
    assert render(volume["Properties"]["AvailabilityZone"]) == (
        "import:${NetworkStackName}-PrivateSubnet1Az"
    )
    assert render(instance["SubnetId"]) == "import:${NetworkStackName}-PrivateSubnet1Id"
    (document,) = [d for where, d in identity_policies(WORKER_INSTANCE)]
    assert _grants(document) == {
        "s3:GetObject": {"arn:${AWS::Partition}:s3:::${ArtifactsBucket}/${WheelhouseKey}"}
    }


# --- deploy/README.md's deploy order --------------------------------------------------------------


def test_readme_deploys_every_template_after_the_stacks_it_imports() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    section = readme.split("## Deploying the whole platform", 1)[1].split("\n## ", 1)[0]
    order: list[str] = []
    for match in re.finditer(r"^deploy feedlot-\$ENV-(\S+) (\S+\.yaml)", section, re.M):
        stack, template = match.groups()
        # stack names follow the templates' default StackName parameters (feedlot-<env>-<x>)
        if template not in order:
            order.append(template)
        expected = "dagster" if template == "dagster-ecs.yaml" else template.removesuffix(".yaml")
        assert stack == expected, (stack, template)
    assert set(order) == {p.name for p in TEMPLATE_DIR.glob("*.yaml")}
    for position, template in enumerate(order):
        params = load_template(TEMPLATE_DIR / template).get("Parameters", {})
        for param in params:
            if param in STACK_PARAMETERS:
                exporter = STACK_PARAMETERS[param]
                assert order.index(exporter) < position, (template, "imports", exporter)
