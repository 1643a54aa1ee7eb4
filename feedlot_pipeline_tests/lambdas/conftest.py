"""Every handler test starts without a cached client map (each test has its own warehouse)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from feedlot_pipeline.lambdas import common


@pytest.fixture(autouse=True)
def fresh_client_map() -> Iterator[None]:
    common.reset_client_map()
    yield
    common.reset_client_map()
