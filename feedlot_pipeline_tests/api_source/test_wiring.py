"""The parts the lead wires into definitions.py load together, bound to the environment."""

from __future__ import annotations

import dagster as dg
import pytest

from feedlot_pipeline.api_source.assets import api_snapshot
from feedlot_pipeline.api_source.resources import build_public_api_resource
from feedlot_pipeline.api_source.schedules import (
    api_snapshot_job,
    api_snapshot_schedule,
    build_api_snapshot_schedule,
)
from feedlot_pipeline.ingestion.resources import LakeResource


def _defs(resource: dg.ConfigurableResource) -> dg.Definitions:
    return dg.Definitions(
        assets=[api_snapshot],
        jobs=[api_snapshot_job],
        schedules=[api_snapshot_schedule],
        resources={"public_api": resource, "lake": LakeResource(bucket="feedlot-lake")},
    )


def test_loads_without_any_api_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unconfigured deployment still loads; the URL is only needed when a run starts."""
    for var in ("FEEDLOT_API_URL", "FEEDLOT_API_AUTH_VALUE", "FEEDLOT_API_CRON"):
        monkeypatch.delenv(var, raising=False)
    defs = _defs(build_public_api_resource())
    dg.Definitions.validate_loadable(defs)
    schedule = defs.resolve_schedule_def("api_snapshot_schedule")
    assert schedule.job_name == "api_snapshot_job"
    assert build_api_snapshot_schedule().cron_schedule == "0 6 * * *"
    assert build_api_snapshot_schedule().default_status == dg.DefaultScheduleStatus.STOPPED


def test_environment_configures_the_resource_and_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDLOT_API_URL", "https://api.example.com/v1/entries")
    monkeypatch.setenv("FEEDLOT_API_NAME", "publicapis")
    monkeypatch.setenv("FEEDLOT_API_HEADERS", '{"Accept": "application/json"}')
    monkeypatch.setenv("FEEDLOT_API_AUTH_HEADER", "X-Api-Key")
    monkeypatch.setenv("FEEDLOT_API_AUTH_VALUE", "env-secret")
    monkeypatch.setenv("FEEDLOT_API_PAGINATION", "next_link")
    monkeypatch.setenv("FEEDLOT_API_RECORDS_PATH", "entries")
    monkeypatch.setenv("FEEDLOT_API_CRON", "15 * * * *")
    resource = build_public_api_resource()
    assert resource.name == "publicapis" and resource.pagination == "next_link"
    dg.Definitions.validate_loadable(_defs(resource))
    schedule = build_api_snapshot_schedule()
    assert schedule.cron_schedule == "15 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_hostile_name_in_the_environment_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDLOT_API_NAME", "../historico_diario")
    with pytest.raises(Exception, match="invalid API name"):
        build_public_api_resource()
