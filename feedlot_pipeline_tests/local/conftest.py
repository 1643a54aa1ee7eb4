"""Local-stack tests never meet a developer's own stack: no default port, no exported variable.

A developer may run ``make dev`` (the default ports 4566, 15432, 9010, 9020, 9030) and test from
a shell that evaluated ``feedlot local env``. Every test here therefore gets a free port for each
service and none of the variables that would point it at that stack (each test sets what it
needs itself).
"""

from __future__ import annotations

import pytest

from feedlot_pipeline_tests.helpers import free_ports

# What `feedlot local env` exports that would lead a test to the developer's running stack.
USER_STACK_VARS = (
    "AWS_ENDPOINT_URL_SSM",
    "DAGSTER_HOME",
    "FEEDLOT_STATE_DIR",
    "FEEDLOT_WAREHOUSE_URL",
    "FEEDLOT_DAGSTER_STORAGE_URL",
    "FEEDLOT_INGEST_API_URL",
    "FEEDLOT_INGEST_API_KEY",
)


@pytest.fixture(autouse=True)
def away_from_a_running_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in USER_STACK_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, port in free_ports().items():
        monkeypatch.setenv(var, str(port))
