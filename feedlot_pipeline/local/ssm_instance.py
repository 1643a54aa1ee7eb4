"""The worker EC2 instance in moto, as ``feedlot local up`` registers it for SSM targeting.

The worker tag (``WorkerSettings``) and the backup tag of its data volume (``BackupSettings``)
are passed in by the caller; this module reads no settings itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORKER_NAME = "feedlot-worker"
WORKER_DATA_ROLE = "worker-data"
ROLE_TAG = "feedlot:role"


@dataclass(frozen=True)
class WorkerInstance:
    instance_id: str
    volume_id: str
    created: bool


def register_worker_instance(
    tag_key: str, tag_value: str, backup_tag_key: str, backup_tag_value: str
) -> WorkerInstance:
    """The worker EC2 instance (tagged for SSM targeting) with a data volume tagged for backup.

    Idempotent: an instance already carrying the worker tag (running) is reused, and so is its
    attached data volume.
    """
    from feedlot_pipeline.core.aws import client

    ec2 = client("ec2")
    found = [
        instance
        for reservation in ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{tag_key}", "Values": [tag_value]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        for instance in reservation["Instances"]
    ]
    created = not found
    if found:
        instance = found[0]
    else:
        tags = {"Name": WORKER_NAME, tag_key: tag_value}
        instance = ec2.run_instances(
            ImageId=_an_image(ec2),
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.large",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["Instances"][0]
    instance_id = instance["InstanceId"]
    volumes = ec2.describe_volumes(
        Filters=[
            {"Name": f"tag:{ROLE_TAG}", "Values": [WORKER_DATA_ROLE]},
            {"Name": "attachment.instance-id", "Values": [instance_id]},
        ]
    )["Volumes"]
    if volumes:
        volume_id = volumes[0]["VolumeId"]
    else:
        tags = {
            "Name": f"{WORKER_NAME}-data",
            ROLE_TAG: WORKER_DATA_ROLE,
            backup_tag_key: backup_tag_value,
        }
        volume_id = ec2.create_volume(
            AvailabilityZone=instance["Placement"]["AvailabilityZone"],
            Size=100,
            VolumeType="gp3",
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )["VolumeId"]
        ec2.attach_volume(Device="/dev/sdf", InstanceId=instance_id, VolumeId=volume_id)
    return WorkerInstance(instance_id, volume_id, created)


def _an_image(ec2: Any) -> str:
    """An AMI id moto knows (its bundled Amazon images)."""
    images = ec2.describe_images(Owners=["amazon"]).get("Images", [])
    return images[0]["ImageId"] if images else "ami-12c6146b"
