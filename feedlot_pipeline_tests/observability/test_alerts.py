"""Alerts end to end on the Dagster side: a real run of the platform's own historico_consumo fails
(or its checks do), the real sensors evaluate against the same instance, and the AlertDocument
arrives on the alerts topic's queue (moto SNS → SQS, raw delivery), where it is read back.
"""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine

from feedlot_pipeline.core.contracts import AlertDocument
from feedlot_pipeline.ingestion.landing import land_records
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.observability.alerts import encode, error_text, headline, publish_alert
from feedlot_pipeline.observability.sensors import (
    build_check_failure_alert_sensor,
    build_run_failure_alert_sensor,
)
from feedlot_pipeline_tests.helpers import CLIENTS, DAY, NOW, inbox, materialize, record

PARTITION = str(farm_day_key("fazenda_um", DAY))


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um"])
        yield inst


class Sensor:
    """A sensor evaluated tick after tick against one instance, its cursor carried over, as the
    daemon does."""

    def __init__(self, definition: dg.SensorDefinition, instance: dg.DagsterInstance) -> None:
        self.definition = definition
        self.instance = instance
        self.cursor: str | None = None
        self.tick()  # a run-status sensor's first tick only places its cursor

    def tick(self):
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
        result = self.definition.evaluate_tick(context)
        self.cursor = result.cursor
        return result


def alerts_in(url: str, expected: int) -> list[AlertDocument]:
    """The alerts on the inbox, waiting up to 5 s for ``expected`` (to see one too many)."""
    return [AlertDocument.parse(json.dumps(d)) for d in inbox(url, expected, timeout=5)]


def land_one(settings) -> None:
    land_records(
        [record()], source="sns", event_id="e1", clients=CLIENTS, settings=settings, received_at=NOW
    )


def test_a_failed_run_publishes_one_alert_with_its_error_and_link(aws, alerts, instance) -> None:
    settings, _ = aws
    _, inbox_url = alerts
    land_one(settings)
    failure = Sensor(build_run_failure_alert_sensor(), instance)
    checks = Sensor(build_check_failure_alert_sensor(), instance)

    unreachable = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
    result = materialize(instance, settings, unreachable)
    assert not result.success
    failure.tick()
    checks.tick()

    (alert,) = alerts_in(inbox_url, 2)
    run_id = result.dagster_run.run_id
    assert (alert.kind, alert.severity, alert.run_id) == ("run_failure", "error", run_id)
    assert alert.job == result.dagster_run.job_name
    assert alert.partition == PARTITION == alert.tags["dagster/partition"]
    assert alert.failed_steps == ["historico_consumo"]
    assert "OperationalError" in alert.error and "127.0.0.1" in alert.error
    assert "Stack Trace" not in alert.error  # messages only
    assert alert.run_url == f"http://dagster.example:3000/runs/{run_id}"
    assert alert.title.startswith(f"{alert.job} [{PARTITION}] failed: OperationalError: ")
    assert alert.failed_checks == [] and alert.time.endswith("Z")

    failure.tick()  # the cursor moved on: the same failure is not alerted twice
    assert inbox(inbox_url, 1, timeout=2) == []


def _tamper(warehouse_url: str) -> None:
    """Another writer on the warehouse (here a trigger) alters every row the loads write: the
    rows land with a consumo_meta their rule does not compute, which only the check, reading the
    rows back, can notice."""
    engine = create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN NEW.consumo_meta := NEW.consumo_meta + 1; RETURN NEW; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON historico_consumo "
                "FOR EACH ROW EXECUTE FUNCTION tamper()"
            )
        )
    engine.dispose()


def test_a_failed_blocking_check_fails_its_run_and_alerts_once(
    aws, warehouse_url, alerts, instance
) -> None:
    settings, _ = aws
    _, inbox_url = alerts
    land_one(settings)
    assert materialize(instance, settings, warehouse_url).success
    failure = Sensor(build_run_failure_alert_sensor(), instance)
    checks = Sensor(build_check_failure_alert_sensor(), instance)

    _tamper(warehouse_url)
    land_records(
        [record(lote="2")],
        source="sns",
        event_id="e2",
        clients=CLIENTS,
        settings=settings,
        received_at=NOW,
    )
    result = materialize(instance, settings, warehouse_url)
    assert not result.success
    failure.tick()
    checks.tick()

    (alert,) = alerts_in(inbox_url, 2)  # one alert, not one per sensor
    assert alert.kind == "run_failure" and alert.run_id == result.dagster_run.run_id
    (failed,) = alert.failed_checks
    assert alert.failed_checks_total == 1 and alert.partitions == [PARTITION]
    assert (failed.asset, failed.check, failed.partition, failed.severity, failed.blocking) == (
        "historico_consumo",
        "loaded_as_landed",
        PARTITION,
        "ERROR",
        True,
    )
    assert failed.metadata["consumo_meta_mismatches"] == 1 and failed.metadata["reconciles"]
    assert not failed.metadata["rows_valid"]
    assert "blocking asset check failed" in alert.error
    assert "1 failed check(s)" in alert.title


# A check that does not block: when it fails, the run still succeeds.
@dg.asset
def feed_bunks() -> int:
    return 3


@dg.asset_check(asset=feed_bunks, blocking=False)
def bunks_not_empty() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"empty_bunks": 2}
    )


def test_failed_checks_of_a_successful_run_alert_as_check_failure(alerts, instance) -> None:
    _, inbox_url = alerts
    failure = Sensor(build_run_failure_alert_sensor(), instance)
    checks = Sensor(build_check_failure_alert_sensor(), instance)
    result = dg.materialize([feed_bunks, bunks_not_empty], instance=instance)
    assert result.success
    ok = dg.materialize([feed_bunks], instance=instance)  # no failed check: no alert
    assert ok.success
    failure.tick()
    checks.tick()

    (alert,) = alerts_in(inbox_url, 2)
    assert (alert.kind, alert.severity, alert.run_id) == (
        "check_failure",
        "warning",
        result.dagster_run.run_id,
    )
    (check,) = alert.failed_checks
    assert (check.asset, check.check, check.blocking) == ("feed_bunks", "bunks_not_empty", False)
    assert check.metadata == {"empty_bunks": 2}
    assert alert.partition is None and alert.error is None


def test_an_unpublishable_alert_fails_the_tick_visibly(
    aws, instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = aws
    monkeypatch.setenv("FEEDLOT_ALERTS_TOPIC", f"no-such-topic-{uuid.uuid4().hex[:6]}")
    failure = Sensor(build_run_failure_alert_sensor(), instance)
    land_one(settings)
    result = materialize(instance, settings, "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert not result.success
    tick = failure.tick()
    (reaction,) = tick.dagster_run_reactions
    assert reaction.dagster_run.run_id == result.dagster_run.run_id
    assert reaction.error is not None and "NotFound" in reaction.error.to_string()


def test_error_text_and_size_limits() -> None:
    from dagster_shared.error import SerializableErrorInfo

    inner = SerializableErrorInfo("boom\n", ["stack"], "ValueError")
    outer = SerializableErrorInfo("Error in op", ["stack"], "DagsterError", cause=inner)
    assert error_text(outer) == "DagsterError: Error in op\n← ValueError: boom"
    qualified = SerializableErrorInfo(
        "psycopg.OperationalError: connection failed\n\tIs the server running?",
        [],
        "OperationalError",
    )
    wrapped = SerializableErrorInfo(
        'dagster._core.errors.DagsterExecutionStepExecutionError: Error in "op"',
        [],
        "DagsterExecutionStepExecutionError",
        cause=qualified,
    )
    assert error_text(wrapped).splitlines()[0] == (
        'DagsterExecutionStepExecutionError: Error in "op"'
    )
    assert headline(wrapped) == "OperationalError: connection failed"
    from feedlot_pipeline.core.contracts import FailedCheck

    big = FailedCheck(asset="a", check="c", metadata={"x": "y" * 2000})
    doc = AlertDocument(
        kind="check_failure",
        severity="warning",
        title="t",
        run_id="r",
        job="j",
        run_url="u",
        time="2024-01-01T00:00:00Z",
        failed_checks=[big] * 200,
    )
    text = encode(doc)
    assert len(text.encode()) <= 250 * 1024
    assert AlertDocument.parse(text).failed_checks[0].metadata == {}


def test_publish_goes_to_the_configured_topic(alerts) -> None:
    _, inbox_url = alerts
    doc = AlertDocument(
        kind="run_failure",
        severity="error",
        title="áccents and\nnewlines in a subject",
        run_id="r1",
        job="j",
        run_url="u",
        time="2024-01-01T00:00:00Z",
    )
    assert publish_alert(doc)
    (received,) = alerts_in(inbox_url, 1)
    assert received == doc
