"""monitoring.yaml: alerts topic, alarms, dashboard, saved Logs Insights queries, Dagster's policy.

The general rules (cfn-lint, least privilege, no public resource policies) already run over it
from test_cfn_lint.py / test_policies.py. These pin what is specific: parameter defaults agree
with settings.py and the other templates, every alarm reads a registered metric with its
dimensions and notifies the alerts topic, the issue's alarm list is covered, the topic accepts
alarms from this account only; then the stack is created on the moto server and what moto builds
is read back (the dashboard body, after ``!Sub``, is the JSON the generator wrote). moto 5.2.5's
CloudFormation creates the topic, the managed policy and the dashboard; it skips
AWS::CloudWatch::Alarm, AWS::SNS::TopicPolicy and AWS::Logs::QueryDefinition (no CloudFormation
support), which are therefore checked statically only.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from feedlot_pipeline.core import metric_registry as registry
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import DEFAULTS
from feedlot_pipeline_tests.deploy.cfn import TEMPLATE_DIR, load_template, render, resources
from feedlot_pipeline_tests.deploy.test_moto_stack import _create, _outputs

MONITORING = load_template(TEMPLATE_DIR / "monitoring.yaml")
CORE = load_template(TEMPLATE_DIR / "core.yaml")
INGEST = load_template(TEMPLATE_DIR / "ingest.yaml")
PARAMS = MONITORING["Parameters"]
ALARMS = dict(resources(MONITORING, "AWS::CloudWatch::Alarm"))

PARAMETER_SETTINGS = {
    "MetricsNamespace": "FEEDLOT_METRICS_NAMESPACE",
    "AlertsTopicName": "FEEDLOT_ALERTS_TOPIC",
    "SensorQueueName": "FEEDLOT_SENSOR_QUEUE",
    "SensorDlqName": "FEEDLOT_SENSOR_DLQ",
    "LargeFileQueueName": "FEEDLOT_LARGE_FILE_QUEUE",
    "LargeFileDlqName": "FEEDLOT_LARGE_FILE_DLQ",
    "FailureTopicName": "FEEDLOT_FAILURE_TOPIC",
}
INSIGHTS = re.compile(
    r'^SELECT MAX\((?P<name>\w+)\) FROM SCHEMA\("\$\{(?P<ns>\w+)\}", (?P<dims>[\w, ]+)\)$'
)


def test_parameter_defaults_match_the_settings_and_the_other_stacks() -> None:
    for parameter, variable in PARAMETER_SETTINGS.items():
        assert str(PARAMS[parameter]["Default"]) == DEFAULTS[variable], parameter
    assert float(PARAMS["EventToRowP95Seconds"]["Default"]) == float(
        DEFAULTS["FEEDLOT_EVENT_TO_ROW_P95_SECONDS"]
    )
    for parameter in ("SensorQueueName", "SensorDlqName", "SnsHandlerFailureQueueName"):
        assert PARAMS[parameter]["Default"] == CORE["Parameters"][parameter]["Default"]
    for parameter in ("ApiStageName", "LargeFileQueueName", "LargeFileDlqName"):
        assert PARAMS[parameter]["Default"] == INGEST["Parameters"][parameter]["Default"]
    # the names the alarms and dashboard build must be the ones the other stacks create
    assert render(CORE["Resources"]["SnsHandlerFunction"]["Properties"]["FunctionName"]) == (
        "feedlot-${EnvironmentName}-sns-handler"
    )
    assert render(INGEST["Resources"]["ApiHandlerFunction"]["Properties"]["FunctionName"]) == (
        "feedlot-${EnvironmentName}-api-handler"
    )
    assert render(INGEST["Resources"]["FileDropFunction"]["Properties"]["FunctionName"]) == (
        "feedlot-${EnvironmentName}-file-drop-handler"
    )
    api_names = [
        render(r["Properties"]["Name"]) for _, r in resources(INGEST, "AWS::ApiGateway::RestApi")
    ]
    assert api_names == ["feedlot-${EnvironmentName}-ingest"]


def _alarm_metric(props: dict) -> tuple[str, str, tuple[str, ...]]:
    """(namespace, metric, dimension names) an alarm reads."""
    if "Metrics" in props:
        (query,) = props["Metrics"]
        found = INSIGHTS.match(render(query["Expression"]))
        assert found, query
        namespace = registry.FEEDLOT if found["ns"] == "MetricsNamespace" else found["ns"]
        return namespace, found["name"], tuple(d.strip() for d in found["dims"].split(","))
    namespace = props["Namespace"]
    namespace = registry.FEEDLOT if namespace == {"Ref": "MetricsNamespace"} else namespace
    return namespace, props["MetricName"], tuple(d["Name"] for d in props.get("Dimensions", []))


def test_every_alarm_reads_a_registered_metric_and_notifies_the_alerts_topic() -> None:
    for logical_id, alarm in ALARMS.items():
        props = alarm["Properties"]
        namespace, name, dims = _alarm_metric(props)
        spec = registry.spec(name, namespace)
        assert not spec.planned
        assert sorted(dims) == sorted(spec.dimensions), logical_id
        assert props["AlarmActions"] == [{"Ref": "AlertsTopic"}], logical_id
        assert props["TreatMissingData"] in ("notBreaching", "breaching")


def test_the_issue_alarm_list_is_covered() -> None:
    read = {logical_id: _alarm_metric(a["Properties"]) for logical_id, a in ALARMS.items()}
    dlq_queues = {
        render(ALARMS[i]["Properties"]["Dimensions"][0]["Value"])
        for i, (_, name, _) in read.items()
        if name == "ApproximateNumberOfMessagesVisible"
    }
    assert dlq_queues == {
        "${SensorDlqName}",
        "${LargeFileDlqName}",
        "${SnsHandlerFailureQueueName}",
    }
    functions = {
        render(ALARMS[i]["Properties"]["Dimensions"][0]["Value"])
        for i, (ns, name, _) in read.items()
        if (ns, name) == ("AWS/Lambda", "Errors")
    }
    assert functions == {
        f"feedlot-${{EnvironmentName}}-{f}"
        for f in ("sns-handler", "api-handler", "file-drop-handler")
    }
    names = {(ns, name) for ns, name, _ in read.values()}
    assert ("AWS/ApiGateway", "5XXError") in names
    assert (registry.FEEDLOT, "EventToRowLatencyP95") in names
    assert (registry.FEEDLOT, "SilentFarms") in names
    assert ("AWS/SNS", "NumberOfMessagesPublished") in names
    silent = ALARMS["SilentFarmsAlarm"]["Properties"]
    assert (silent["Statistic"], silent["TreatMissingData"]) == ("Minimum", "breaching")
    latency = ALARMS["EventToRowLatencyAlarm"]["Properties"]
    assert latency["Threshold"] == {"Ref": "EventToRowP95Seconds"}


def test_alerts_topic_accepts_alarms_of_this_account_only_and_dagster_may_publish() -> None:
    (policy,) = [r for _, r in resources(MONITORING, "AWS::SNS::TopicPolicy")]
    allow, deny = policy["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    statements = MONITORING["Resources"]["DagsterMonitoringPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["PublishAlerts"]["Resource"] == {"Ref": "AlertsTopic"}
    queues = {render(r).rsplit(":", 1)[1] for r in by_sid["ReadQueueDepths"]["Resource"]}
    assert queues == {
        "${SensorQueueName}",
        "${SensorDlqName}",
        "${LargeFileQueueName}",
        "${LargeFileDlqName}",
    }


def test_saved_queries_follow_a_correlation_id_and_rejections() -> None:
    queries = {i: r["Properties"] for i, r in resources(MONITORING, "AWS::Logs::QueryDefinition")}
    trace = queries["TraceCorrelationIdQuery"]
    assert 'filter correlation_id = "REPLACE-WITH-CORRELATION-ID"' in trace["QueryString"]
    groups = [render(g) for g in trace["LogGroupNames"]]
    assert "${DagsterLogGroupName}" in groups and len(groups) == 4
    assert (
        "stats sum(count) as rejected by reason_code"
        in queries["RejectionsByReasonQuery"]["QueryString"]
    )


@pytest.fixture(scope="module")
def stack(moto_endpoint: str) -> dict:
    env = f"m{uuid.uuid4().hex[:6]}"
    created = _create(
        f"{env}-monitoring",
        "monitoring.yaml",
        {
            "EnvironmentName": env,
            "AlertsTopicName": f"{env}-alerts",
            "AlertEmail": "ops@example.com",
        },
    )
    return {"env": env, "stack": created}


def test_stack_creates_the_topic_and_the_dashboard_on_moto(stack: dict) -> None:
    env = stack["env"]
    outputs = _outputs(stack["stack"])
    assert outputs["AlertsTopicArn"].endswith(f":{env}-alerts")
    assert outputs["DashboardName"] == f"feedlot-{env}-overview"
    attributes = client("sns").get_topic_attributes(TopicArn=outputs["AlertsTopicArn"])
    assert attributes["Attributes"]["TopicArn"] == outputs["AlertsTopicArn"]
    body = client("cloudwatch").get_dashboard(DashboardName=f"feedlot-{env}-overview")[
        "DashboardBody"
    ]
    dashboard = json.loads(body)  # the substituted body is JSON
    assert "${" not in body
    functions = json.dumps(dashboard)
    assert f"feedlot-{env}-sns-handler" in functions and "us-east-1" in functions
    expressions = {
        row[0]["expression"]
        for w in dashboard["widgets"]
        for row in w["properties"].get("metrics", [])
        if isinstance(row[0], dict)
    }
    assert """SEARCH('{Feedlot,Job} MetricName="RowsInserted"', 'Sum', 300)""" in expressions
