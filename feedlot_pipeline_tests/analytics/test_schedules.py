"""The analytics schedules, evaluated at a tick and their jobs run; the hourly reconciliation's
failure documents and the per-farm freshness check."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa

from feedlot_pipeline.analytics.definitions import definitions as analytics_definitions
from feedlot_pipeline.analytics.partition import refresh_partitions
from feedlot_pipeline.analytics.reconcile import farm_freshness, recent_days, run_reconciliation
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.definitions import defs
from feedlot_pipeline.ingestion.partitions import farms_partitions
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.analytics.test_assets import resources
from feedlot_pipeline_tests.helpers import consumo_record, inbox, load_records, s3_keys

SP = ZoneInfo("America/Sao_Paulo")


@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
        yield inst


def analytics_defs(env) -> dg.Definitions:
    """The analytics definitions (targets from this test's settings) with its warehouse."""
    warehouse = {"warehouse": resources(env)["warehouse"]}
    return dg.Definitions.merge(analytics_definitions(), dg.Definitions(resources=warehouse))


def tick(instance, name: str, when: datetime):
    schedule = defs.resolve_schedule_def(name)
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        repository_def=defs.get_repository_def(),
    )
    return schedule, schedule.evaluate_tick(context)


def test_schedules_are_on_by_default_at_six_in_sao_paulo() -> None:
    for name in ("analytics_monthly_schedule", "farm_report_schedule"):
        schedule = defs.resolve_schedule_def(name)
        assert schedule.cron_schedule == "0 6 * * *"
        assert schedule.execution_timezone == "America/Sao_Paulo"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    hourly = defs.resolve_schedule_def("analytics_reconciliation_schedule")
    assert hourly.cron_schedule == "0 * * * *"
    assert hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert hourly.job_name == "analytics_reconciliation_job"


def test_cron_and_zone_are_configurable(monkeypatch) -> None:
    from feedlot_pipeline.analytics.schedules import build_schedules
    from feedlot_pipeline.core.settings import SettingsError

    monkeypatch.setenv("FEEDLOT_ANALYTICS_CRON", "30 5 * * *")
    monkeypatch.setenv("FEEDLOT_ANALYTICS_TIMEZONE", "America/Cuiaba")
    monthly, daily, _ = build_schedules()
    assert (monthly.cron_schedule, monthly.execution_timezone) == ("30 5 * * *", "America/Cuiaba")
    monkeypatch.setenv("FEEDLOT_ANALYTICS_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match="FEEDLOT_ANALYTICS_TIMEZONE"):
        AnalyticsSettings()


def test_daily_schedules_request_yesterday_per_farm_and_their_jobs_run(analytics_env, instance):
    env = analytics_env
    days = [date(2022, 12, 30), date(2022, 12, 31)]
    load_records(
        env,
        [consumo_record(day=d.isoformat(), lote=str(i)) for d in days for i in range(3)]
        + [consumo_record("FazendaDois", day="2022-12-31", lote="7", real=9.5)],
    )
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(
            wh,
            env.targets,
            [("fazenda_um", d) for d in days] + [("fazenda_dois", days[1])],
            notify=False,
        )
    # 06:00 in São Paulo on 2023-01-01 is 09:00 UTC: the report is of 2022-12-31.
    when = datetime(2023, 1, 1, 6, 0, tzinfo=SP)
    _, daily = tick(instance, "farm_report_schedule", when)
    assert sorted(r.partition_key for r in daily.run_requests) == [
        "2022-12-31|fazenda_dois",
        "2022-12-31|fazenda_um",
    ]
    _, monthly = tick(instance, "analytics_monthly_schedule", when)
    assert sorted(r.partition_key for r in monthly.run_requests) == [
        "fazenda_dois|2022-12-01",
        "fazenda_um|2022-12-01",
    ]
    run_defs = analytics_defs(env)
    for job_name, request in (
        ("farm_report_job", daily.run_requests[1]),
        ("analytics_monthly_job", monthly.run_requests[1]),
    ):
        result = run_defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=request.partition_key
        )
        assert result.success, job_name
    keys = s3_keys(env.targets.bucket)
    assert "reports/fazenda_um/2022/12/31/relatorio.html" in keys
    assert "reports/fazenda_um/2022/12/relatorio.html" in keys
    assert "describe/historico_consumo/fazenda_um/2022/12/describe.csv" in keys
    body = (
        client("s3")
        .get_object(
            Bucket=env.targets.bucket,
            Key="describe/historico_consumo/fazenda_um/2022/12/describe.csv",
        )["Body"]
        .read()
    )
    count_line = body.decode().splitlines()[1]
    assert count_line.startswith("count,") and count_line.split(",")[5] == "6.000000"


def test_no_farm_registered_skips(instance) -> None:
    with dg.instance_for_test() as empty:
        _, result = tick(empty, "farm_report_schedule", datetime(2023, 1, 1, 6, tzinfo=SP))
    assert not result.run_requests and result.skip_message


def test_reconciliation_publishes_each_mismatch_as_a_failure_document(analytics_env, monkeypatch):
    env = analytics_env
    today = datetime.now(timezone.utc).date()
    days = recent_days(today, 3)
    # Records stamped in the last days, as a farm sends them (received now, not NOW).
    from feedlot_pipeline.ingestion.landing import land_records
    from feedlot_pipeline_tests.helpers import CLIENTS

    records = [consumo_record(day=d.isoformat(), lote=str(i)) for d in days for i in range(2)]
    notices = land_records(records, source="sns", event_id="r1", clients=CLIENTS)
    parts = sorted({(n.fazenda, date.fromisoformat(n.dia)) for n in notices})
    from feedlot_pipeline_tests.helpers import load_noticed_partitions

    load_noticed_partitions(env.settings, env.warehouse_url, notices)
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(wh, env.targets, parts[1:], notify=False)  # one day not summarised
        with wh.engine.begin() as conn:  # and one summary row lost
            conn.execute(
                sa.text("DELETE FROM consumo_diario WHERE dia = :d AND id_lote = '1'"),
                {"d": parts[1][1]},
            )
        report = run_reconciliation(wh, ["fazenda_um", "fazenda_dois"], days, run_id="r-1")
    assert report.partitions_checked == 6
    found = sorted((m.fazenda, m.dia, m.expected, m.found) for m in report.mismatches)
    assert found == [("fazenda_um", parts[0][1], 2, 0), ("fazenda_um", parts[1][1], 2, 1)]
    assert all(report.published)
    docs = inbox(client("sqs").get_queue_url(QueueName=env.settings.failures_inbox)["QueueUrl"], 2)
    assert sorted(d["stage"] for d in docs) == ["consumo_diario_vs_historico"] * 2
    assert {d["source"] for d in docs} == {"reconciliation"}
    payload = json.loads(docs[0]["payload"])
    assert payload["fazenda"] == "fazenda_um" and payload["expected"] == 2

    # The hourly job (the schedule's target) runs the same checks over every farm.
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(farms_partitions.name, ["fazenda_um"])
        _, ticked = tick(instance, "analytics_reconciliation_schedule", datetime.now(SP))
        assert len(ticked.run_requests) == 1
        run_defs = analytics_defs(env)
        result = run_defs.resolve_job_def("analytics_reconciliation_job").execute_in_process(
            instance=instance
        )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    recon = evaluations["consumo_diario_reconciliation_recent"]
    assert recon.passed is False and recon.metadata["mismatches"].value == 2
    assert recon.metadata["failure_documents"].value == 2
    freshness = evaluations["farm_freshness"]
    # fazenda_um was loaded just now; fazenda_dois (a client with no data at all) is overdue.
    assert freshness.passed is False
    assert freshness.metadata["overdue_farms"].value == ["fazenda_dois"]


def test_freshness_flags_a_farm_silent_for_26_hours(analytics_env) -> None:
    env = analytics_env
    load_records(env, [consumo_record(lote="1"), consumo_record("FazendaDois", lote="2")])
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(
            wh,
            env.targets,
            [("fazenda_um", date(2023, 1, 1)), ("fazenda_dois", date(2023, 1, 1))],
            notify=False,
        )
        with wh.engine.begin() as conn:  # fazenda_dois's data was processed 27 h ago
            old = datetime.now(timezone.utc) - timedelta(hours=27)
            conn.execute(
                sa.text("UPDATE consumo_diario SET ultimo_processamento = :t WHERE fazenda = :f"),
                {"t": old, "f": "fazenda_dois"},
            )
        states = farm_freshness(
            wh, ["fazenda_um", "fazenda_dois", "fazenda_tres"], datetime.now(timezone.utc), 26
        )
    by_farm = {s.fazenda: s for s in states}
    assert not by_farm["fazenda_um"].overdue and by_farm["fazenda_um"].age_hours < 1
    assert by_farm["fazenda_dois"].overdue and 26.9 < by_farm["fazenda_dois"].age_hours < 27.1
    assert by_farm["fazenda_tres"].overdue and by_farm["fazenda_tres"].last_update is None
