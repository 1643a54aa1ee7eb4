"""The client map (``cod_cliente`` → farm) as a document in the lake, for readers that must not
depend on the warehouse: the landing Lambdas and the sensor.

The warehouse table ``clientes`` is the source; ``client_map_sensor`` (and ``feedlot clients
add``, and ``feedlot local up``) publish it to ``s3://<lake>/reference/clientes.json`` whenever
it changes. A reader keeps the last map it read, so an outage of S3 costs nothing either, as long
as a map was read once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import ClientMapDocument

KEY = "reference/clientes.json"


def digest(clients: Mapping[str, str]) -> str:
    """A stable fingerprint of a map, to tell whether the published one is current."""
    text = json.dumps(dict(sorted(clients.items())), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def publish(bucket: str, clients: Mapping[str, str]) -> ClientMapDocument:
    """Write the map to the lake (private bucket, server-side encrypted like every object)."""
    doc = ClientMapDocument(
        clients=dict(sorted(clients.items())),
        digest=digest(clients),
        published_at=datetime.now(timezone.utc).isoformat(),
    )
    client("s3").put_object(
        Bucket=bucket,
        Key=KEY,
        Body=doc.to_json().encode(),
        ContentType="application/json",
    )
    return doc


def fetch(bucket: str) -> ClientMapDocument | None:
    """The published map; None when none was ever published (other errors raise)."""
    s3 = client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return ClientMapDocument.parse(body)
