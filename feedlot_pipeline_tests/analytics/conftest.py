"""Analytics fixtures: the moto server's buckets plus a Glue database, events topic and a queue
subscribed to it of each test's own, and a migrated warehouse (PostgreSQL, or MySQL/MariaDB)."""

from __future__ import annotations

import uuid

import pytest

from feedlot_pipeline.analytics.notices import ensure_topic
from feedlot_pipeline.analytics.targets import AnalyticsTargets
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.warehouse.schema import upgrade
from feedlot_pipeline_tests.helpers import AnalyticsEnv


def _env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, url: str):
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("FEEDLOT_GLUE_DATABASE", f"t{tag}_feedlot")
    monkeypatch.setenv("FEEDLOT_PROCESSED_EVENTS_TOPIC", f"t{tag}-processed-events")
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", url)
    settings, _ = request.getfixturevalue("aws")
    targets = AnalyticsTargets.from_settings(settings)
    arn = ensure_topic(targets)
    sqs = client("sqs")
    queue = sqs.create_queue(QueueName=f"t{tag}-processed-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns").subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return AnalyticsEnv(settings, targets, queue, url)


@pytest.fixture()
def analytics_env(request, monkeypatch, warehouse_url) -> AnalyticsEnv:
    """PostgreSQL warehouse + moto."""
    return _env(request, monkeypatch, warehouse_url)


@pytest.fixture(params=["postgresql", "mysql"])
def any_analytics_env(request, monkeypatch) -> AnalyticsEnv:
    """The same on each database; MySQL needs FEEDLOT_TEST_MYSQL_URL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("warehouse_url")
    else:
        url = request.getfixturevalue("mysql_url")
        upgrade(url)
    return _env(request, monkeypatch, url)


@pytest.fixture(params=["postgresql", "mysql"])
def any_url(request: pytest.FixtureRequest) -> str:
    """A freshly migrated warehouse on each database; MySQL needs FEEDLOT_TEST_MYSQL_URL."""
    if request.param == "postgresql":
        return request.getfixturevalue("warehouse_url")
    url = request.getfixturevalue("mysql_url")
    upgrade(url)
    return url
