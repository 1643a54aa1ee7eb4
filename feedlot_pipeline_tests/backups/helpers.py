"""Helpers for the backup tests: volumes and snapshots on the moto server."""

from __future__ import annotations

import time
from typing import Any


def make_volume(ec2: Any, tags: dict[str, str]) -> str:
    spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    volume = ec2.create_volume(
        Size=1, AvailabilityZone="us-east-1a", **({"TagSpecifications": spec} if tags else {})
    )
    return volume["VolumeId"]


def snapshots_of(ec2: Any, volume_id: str) -> dict[str, dict[str, str]]:
    """Every snapshot of a volume (whoever made it) → its tags."""
    found = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [volume_id]}])
    return {
        s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])}
        for s in found["Snapshots"]
    }


def next_second() -> None:
    """moto's StartTime has whole seconds: wait so the next snapshot sorts strictly newer."""
    time.sleep(1.05)
