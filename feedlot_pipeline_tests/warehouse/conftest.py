"""Warehouse fixtures: the same tests on PostgreSQL and, when configured, MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from feedlot_pipeline.warehouse.schema import upgrade
from feedlot_pipeline.warehouse.store import Warehouse


@pytest.fixture(params=["postgresql", "mysql"])
def any_url(request: pytest.FixtureRequest) -> str:
    """A freshly migrated warehouse on each database; MySQL needs FEEDLOT_TEST_MYSQL_URL."""
    if request.param == "postgresql":
        return request.getfixturevalue("warehouse_url")
    url = request.getfixturevalue("mysql_url")
    upgrade(url)
    return url


@pytest.fixture()
def wh(any_url: str) -> Iterator[Warehouse]:
    warehouse = Warehouse(any_url)
    yield warehouse
    warehouse.dispose()


@pytest.fixture()
def pg_wh(warehouse_url: str) -> Iterator[Warehouse]:
    warehouse = Warehouse(warehouse_url)
    yield warehouse
    warehouse.dispose()
