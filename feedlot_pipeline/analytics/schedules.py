"""Jobs and schedules of the analytics layer (on by default: ``make dev`` runs them).

- ``analytics_monthly_schedule``: daily at FEEDLOT_ANALYTICS_CRON (06:00) in
  FEEDLOT_ANALYTICS_TIMEZONE (America/Sao_Paulo): the monthly describe and the monthly report of
  every farm, for the month of yesterday (month to date).
- ``farm_report_schedule``: at the same time, the farm report of yesterday for every farm.
  (Two schedules because a run's assets share one partitions definition: farm × month vs
  farm × day.)
- ``analytics_reconciliation_schedule``: hourly, the cross-farm checks (per-farm freshness,
  consumo_diario vs historico_consumo over the last 3 days, mismatches → failure documents).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from feedlot_pipeline.analytics.assets import (
    FARM_DIMENSION,
    MONTH_DIMENSION,
    MONTHLY_ASSETS,
    REPORT_ASSETS,
)
from feedlot_pipeline.analytics.checks import CROSS_FARM_CHECKS
from feedlot_pipeline.core.records import UNROUTED_FARM
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.ingestion.partitions import (
    farm_day_key,
    farms_partitions,
)

analytics_monthly_job = dg.define_asset_job(
    name="analytics_monthly_job",
    selection=dg.AssetSelection.assets(*MONTHLY_ASSETS),
    executor_def=dg.in_process_executor,
    description="Monthly describe CSV and monthly farm report of one farm × month.",
)
farm_report_job = dg.define_asset_job(
    name="farm_report_job",
    selection=dg.AssetSelection.assets(*REPORT_ASSETS),
    executor_def=dg.in_process_executor,
    description="The farm report (HTML) of one farm × day.",
)
analytics_reconciliation_job = dg.define_asset_job(
    name="analytics_reconciliation_job",
    selection=dg.AssetSelection.checks(*CROSS_FARM_CHECKS),
    executor_def=dg.in_process_executor,
    description="Per-farm freshness, and consumo_diario vs historico_consumo over the last days "
    "of every farm (mismatches are published as failure documents).",
)


def report_day(context: dg.ScheduleEvaluationContext, zone: str) -> date:
    """Yesterday, in the farms' time zone, at the tick's scheduled time."""
    moment = context.scheduled_execution_time or datetime.now(ZoneInfo(zone))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(ZoneInfo(zone)).date() - timedelta(days=1)


def _farms(context: dg.ScheduleEvaluationContext) -> list[str]:
    farms = context.instance.get_dynamic_partitions(farms_partitions.name)
    return sorted(f for f in farms if f != UNROUTED_FARM)


def build_schedules(settings: AnalyticsSettings | None = None) -> list[dg.ScheduleDefinition]:
    s = settings or AnalyticsSettings()

    @dg.schedule(
        name="analytics_monthly_schedule",
        cron_schedule=s.analytics_cron,
        execution_timezone=s.analytics_timezone,
        job=analytics_monthly_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Monthly describe + monthly report of every farm, month of yesterday.",
    )
    def analytics_monthly_schedule(context: dg.ScheduleEvaluationContext):
        day = report_day(context, s.analytics_timezone)
        month = day.replace(day=1).isoformat()
        farms = _farms(context)
        if not farms:
            return dg.SkipReason("no farm partitions registered yet")
        return [
            dg.RunRequest(
                run_key=f"{farm}|{month}|{day.isoformat()}",
                partition_key=dg.MultiPartitionKey({FARM_DIMENSION: farm, MONTH_DIMENSION: month}),
            )
            for farm in farms
        ]

    @dg.schedule(
        name="farm_report_schedule",
        cron_schedule=s.analytics_cron,
        execution_timezone=s.analytics_timezone,
        job=farm_report_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The farm report of yesterday, for every farm.",
    )
    def farm_report_schedule(context: dg.ScheduleEvaluationContext):
        day = report_day(context, s.analytics_timezone)
        farms = _farms(context)
        if not farms:
            return dg.SkipReason("no farm partitions registered yet")
        return [
            dg.RunRequest(
                run_key=f"{farm}|{day.isoformat()}", partition_key=farm_day_key(farm, day)
            )
            for farm in farms
        ]

    reconciliation = dg.ScheduleDefinition(
        name="analytics_reconciliation_schedule",
        cron_schedule=s.reconciliation_cron,
        execution_timezone=s.analytics_timezone,
        job=analytics_reconciliation_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly: per-farm freshness and the consumo_diario reconciliation.",
    )
    return [analytics_monthly_schedule, farm_report_schedule, reconciliation]
