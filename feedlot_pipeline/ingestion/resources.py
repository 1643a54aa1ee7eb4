"""Resources of the ingestion domain: the lake's raw zone and the sensor queue.

Both reach AWS through boto3, so ``AWS_ENDPOINT_URL`` alone decides between moto and AWS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import dagster as dg

from feedlot_pipeline.core.aws import client, queue_url
from feedlot_pipeline.core.lake import RAW_PREFIX, check_farm, parse_raw_key, partition_prefix
from feedlot_pipeline.ingestion.queue_sensor import QueueTick


@dataclass(frozen=True)
class RawObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class RawRead:
    """One raw object as read: its lines, when it landed and the ingest's correlation id.

    ``lines`` is None when the object is gone (deleted, or never existed: a forged notice).
    """

    key: str
    landed_at: datetime
    correlation_id: str | None
    lines: list[bytes] | None


class LakeResource(dg.ConfigurableResource):
    """The data lake bucket; the raw zone is the source of truth for every warehouse table."""

    bucket: str

    def _listed(self, prefix: str, start_after: str = "") -> Iterator[RawObject]:
        """The objects under ``prefix`` (after ``start_after``) in key order, page by page."""
        pages = (
            client("s3")
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix, StartAfter=start_after)
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield RawObject(item["Key"], item["Size"], item["LastModified"])

    def partition_objects(self, fazenda: str, dia: date) -> list[RawObject]:
        """Raw objects of one partition, oldest landing first."""
        found = self._listed(partition_prefix(fazenda, dia))
        return sorted(found, key=lambda o: (o.last_modified, o.key))

    def farm_objects(self, fazenda: str, first: date, last: date) -> list[tuple[date, RawObject]]:
        """(day, object) of one farm's days ``first``..``last`` in one listing (not one per day):
        keys sort by day under the farm's prefix, so the listing starts at ``first`` and stops
        after ``last``."""
        prefix = f"{RAW_PREFIX}/{check_farm(fazenda)}/"
        found: list[tuple[date, RawObject]] = []
        for o in self._listed(prefix, start_after=f"{prefix}{first:%Y/%m/%d}"):
            try:
                dia = parse_raw_key(o.key)[1]
            except ValueError:
                continue  # not in the raw layout (a stray upload): no partition to load into
            if dia > last:
                break
            found.append((dia, o))
        return found

    def iter_lines(self, key: str) -> Iterator[bytes]:
        """Stream an object's non-empty lines without holding it in memory."""
        return self.open_lines(key)[1]

    def open_lines(self, key: str) -> tuple[str | None, Iterator[bytes]]:
        """The object's correlation id (set by the landing Lambda) and its streamed lines."""
        response = client("s3").get_object(Bucket=self.bucket, Key=key)
        correlation_id = (response.get("Metadata") or {}).get("correlation-id")
        return correlation_id or None, _non_empty_lines(response["Body"])

    def read(self, key: str) -> RawRead:
        """One object whole (raw objects are one event's records: small), with its landing."""
        s3 = client("s3")
        try:
            response = s3.get_object(Bucket=self.bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return RawRead(key, datetime.now(timezone.utc), None, None)
        meta = response.get("Metadata") or {}
        data = response["Body"].read()
        return RawRead(
            key=key,
            landed_at=_landed_at(meta.get("received-at"), response["LastModified"]),
            correlation_id=meta.get("correlation-id") or None,
            lines=[line for line in data.splitlines() if line.strip()],
        )

    def read_many(self, keys: Iterable[str], workers: int = 16) -> Iterator[RawRead]:
        """``read`` for many keys, ``workers`` at a time, in the order of ``keys`` (a streaming
        batch is thousands of one-record objects: their GETs wait on the lake, not the CPU)."""
        keys = list(keys)
        if len(keys) <= 1:
            yield from (self.read(k) for k in keys)
            return
        with ThreadPoolExecutor(min(workers, len(keys)), thread_name_prefix="feedlot-lake") as pool:
            yield from pool.map(self.read, keys)


def _landed_at(received_at: str | None, last_modified: datetime) -> datetime:
    """When an object landed: the landing's own clock (metadata), else S3's LastModified."""
    if received_at:
        try:
            parsed = datetime.fromisoformat(received_at)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(timezone.utc)
    return last_modified.astimezone(timezone.utc)


def _non_empty_lines(body: Any) -> Iterator[bytes]:
    for line in body.iter_lines(chunk_size=1 << 16):
        if line.strip():
            yield line


class SensorQueueResource(dg.ConfigurableResource):
    """An SQS queue a sensor drains (landing notices, large files) and its dead-letter queue."""

    queue: str
    dlq: str

    def url(self) -> str:
        return queue_url(self.queue)

    def dlq_url(self) -> str:
        return queue_url(self.dlq)

    def tick(self, cursor: str | None, stage: str, max_messages: int) -> QueueTick:
        """This tick's view of the queue (``queue_sensor`` protocol), from the sensor's cursor."""
        return QueueTick(
            queue_url=self.url(),
            dlq=self.dlq,
            dlq_url=self.dlq_url(),
            stage=stage,
            cursor=cursor,
            max_messages=max_messages,
        )
