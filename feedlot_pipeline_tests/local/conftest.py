"""Local-stack tests never meet a developer's own stack: no default port, no exported variable.

A developer may run ``make dev`` (the default ports 4566, 15432, 9010, 9020, 9030) and test from
a shell that evaluated ``feedlot local env``. Every test here therefore gets a free port for each
service and none of the variables that would point it at that stack (each test sets what it
needs itself).
"""

from __future__ import annotations

import pytest

from feedlot_pipeline.local.services import free_port
from feedlot_pipeline_tests.helpers import PORT_VARS

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
    chosen: set[int] = set()
    for var in PORT_VARS:
        port = free_port()
        while port in chosen:
            port = free_port()
        chosen.add(port)
        monkeypatch.setenv(var, str(port))
