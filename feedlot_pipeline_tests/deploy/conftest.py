"""Markers of the deploy tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: builds a virtual environment or installs a tool (30-60 s); still part of the suite",
    )
