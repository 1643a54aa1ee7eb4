"""deploy/cloudformation/analytics.yaml and deploy/athena/curated_lake.sql agree with the code:
the Glue tables have exactly the curated files' columns and types, names default to the
settings, outputs feed the platform's variables, the policy is least privilege."""

from __future__ import annotations

import re

from feedlot_pipeline.analytics.curated import PARTITION_KEYS, TABLES
from feedlot_pipeline.core.settings import DEFAULTS, DOCS
from feedlot_pipeline_tests.deploy.cfn import (
    REPO,
    TEMPLATE_DIR,
    iam_problems,
    identity_policies,
    load_template,
    render,
    resources,
    stack_env_module,
    statements,
)

ANALYTICS = load_template(TEMPLATE_DIR / "analytics.yaml")
DDL = (REPO / "deploy" / "athena" / "curated_lake.sql").read_text()


def test_glue_tables_match_the_curated_schemas() -> None:
    tables = {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
        for _, r in resources(ANALYTICS, "AWS::Glue::Table")
    }
    assert set(tables) == set(TABLES)
    for name, table in TABLES.items():
        found = tables[name]
        columns = [(c["Name"], c["Type"]) for c in found["StorageDescriptor"]["Columns"]]
        assert columns == [(n, table.glue_types[n]) for n in table.schema.names], name
        keys = [(k["Name"], k["Type"]) for k in found["PartitionKeys"]]
        assert keys == list(PARTITION_KEYS)
        assert render(found["StorageDescriptor"]["Location"]).endswith(f"curated/{name}/") or (
            f"{name}/" in str(found["StorageDescriptor"]["Location"])
        )


def test_athena_ddl_matches_the_curated_schemas() -> None:
    for name, table in TABLES.items():
        block = re.search(
            rf"CREATE EXTERNAL TABLE IF NOT EXISTS feedlot\.{name} \((.*?)\)\s*PARTITIONED BY",
            DDL,
            re.S,
        )
        assert block, name
        columns = re.findall(r"^\s*(\w+)\s+(\w+)\s+COMMENT", block.group(1), re.M)
        assert columns == [(n, table.glue_types[n]) for n in table.schema.names], name
    assert DDL.count("PARTITIONED BY (fazenda string, dia date)") == 2


def test_defaults_match_settings_and_outputs_feed_variables() -> None:
    params = ANALYTICS["Parameters"]
    assert (
        params["ProcessedEventsTopicName"]["Default"] == DEFAULTS["FEEDLOT_PROCESSED_EVENTS_TOPIC"]
    )
    assert params["GlueDatabaseName"]["Default"] == DEFAULTS["FEEDLOT_GLUE_DATABASE"]
    assert params["CuratedPrefix"]["Default"] == DEFAULTS["FEEDLOT_CURATED_PREFIX"]
    outputs = stack_env_module().env_from_outputs(
        {"Description": o.get("Description", ""), "OutputValue": render(o["Value"])}
        for o in ANALYTICS["Outputs"].values()
    )
    assert set(outputs) == {"FEEDLOT_PROCESSED_EVENTS_TOPIC", "FEEDLOT_GLUE_DATABASE"}
    assert all(name in DOCS for name in outputs)
    topic = ANALYTICS["Resources"]["ProcessedEventsTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == "alias/aws/sns"


def test_named_query_is_the_sample_of_the_ddl_file() -> None:
    (query,) = [r for _, r in resources(ANALYTICS, "AWS::Athena::NamedQuery")]
    text = " ".join(query["Properties"]["QueryString"].split())
    assert "FROM consumo_diario" in text and "GROUP BY fazenda, dia" in text
    assert "count_if(abs(desvio_pct) > 25)" in text and "count_if(abs(desvio_pct) > 25)" in DDL


def test_dagster_policy_grants_what_the_analytics_call_and_no_more() -> None:
    assert iam_problems(ANALYTICS) == []
    ((_, document),) = list(identity_policies(ANALYTICS))
    actions = {
        a
        for s in statements(document)
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "s3:PutObject",
        "s3:GetObject",
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:UpdateTable",
        "glue:GetPartitions",
        "glue:BatchCreatePartition",
        "sns:Publish",
    }
    puts = next(s for s in statements(document) if s["Action"] == "s3:PutObject")
    rendered = {render(r) for r in puts["Resource"]}
    assert all(r.endswith(("${CuratedPrefix}*", "/describe/*", "/reports/*")) for r in rendered)
