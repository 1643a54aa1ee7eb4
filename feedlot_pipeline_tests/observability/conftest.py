"""The alerts topic and its inbox, of each test's own, on the moto server."""

from __future__ import annotations

import uuid

import pytest

from feedlot_pipeline.observability.alerts import provision_alerts


@pytest.fixture()
def alerts(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(alerts topic ARN, inbox queue URL), created the way ``feedlot local up`` should."""
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("FEEDLOT_ALERTS_TOPIC", f"t{tag}-alerts")
    monkeypatch.setenv("FEEDLOT_ALERTS_INBOX", f"t{tag}-alerts-inbox")
    monkeypatch.setenv("FEEDLOT_DAGSTER_UI_URL", "http://dagster.example:3000/")
    first = provision_alerts()
    assert provision_alerts() == first  # idempotent
    return first
