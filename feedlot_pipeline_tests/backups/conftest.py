"""EC2 fixtures for the backup tests, on the session's moto server.

The moto server is shared by the whole test session, so each test selects volumes by a tag key of
its own (``Backup-<hex>``): no test backs up, or prunes, another test's volumes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from feedlot_pipeline.backups.snapshots import BackupPolicy
from feedlot_pipeline.core.aws import client


@pytest.fixture()
def ec2(moto_endpoint: str) -> Any:
    return client("ec2")


@pytest.fixture()
def settings(moto_endpoint: str) -> BackupPolicy:
    """Default retention, selecting by a tag key only this test uses."""
    return BackupPolicy(tag_key=f"Backup-{uuid.uuid4().hex[:8]}", tag_value="true")
