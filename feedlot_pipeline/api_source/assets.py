# Dagster inspects the context annotation at definition time: no postponed annotations here.
"""api_snapshot: a configured public JSON API pulled into the lake's raw zone.

Layout: ``api_snapshots/<name>/<yyyy>/<mm>/<dd>/<name>-<UTC timestamp>.jsonl`` (one record per
line), dated by when the pull started. The asset is not partitioned: a snapshot is the API's state
at fetch time, which cannot be fetched again for a past day, so a day partition would invite
backfills that file today's data under old dates. Several pulls a day are distinct objects.

All or nothing: pages stream to a local temporary file and the object is uploaded only after the
last page arrived (a single PutObject, or a multipart upload that s3transfer aborts on failure),
so a failed pull leaves nothing under api_snapshots/ and fails the run with the HTTP status.
"""

import tempfile
import time
from datetime import datetime, timezone
from urllib.parse import quote

import dagster as dg
from boto3.s3.transfer import TransferConfig

from feedlot_pipeline.api_source.client import ApiFetchError, FetchResult, fetch_to_jsonl
from feedlot_pipeline.api_source.resources import PublicApiResource, check_name
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.resources import LakeResource

API_SNAPSHOT = dg.AssetKey("api_snapshot")
SNAPSHOT_PREFIX = "api_snapshots"
# Below this a snapshot is one PutObject; above, a multipart upload (aborted on failure).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
_S3_META_VALUE_LIMIT = 512


def snapshot_prefix(name: str, day: datetime | None = None) -> str:
    """Prefix of one API's snapshots (of one UTC day when given), ending with '/'."""
    base = f"{SNAPSHOT_PREFIX}/{check_name(name)}/"
    return base if day is None else f"{base}{day:%Y/%m/%d}/"


def snapshot_key(name: str, fetched_at: datetime) -> str:
    """Key of one snapshot; microseconds keep two pulls in the same second apart."""
    utc = fetched_at.astimezone(timezone.utc)
    return f"{snapshot_prefix(name, utc)}{name}-{utc:%Y%m%dT%H%M%S.%fZ}.jsonl"


def _s3_meta(value: object) -> str:
    """An S3 user-metadata value: ASCII only (it travels as an HTTP header) and short."""
    return quote(str(value), safe=" :/?&=*,;@+-._~")[:_S3_META_VALUE_LIMIT]


def land_snapshot(path: str, bucket: str, key: str, metadata: dict[str, str]) -> None:
    """Upload the finished JSONL file; only a complete object ever becomes visible."""
    client("s3").upload_file(
        path,
        bucket,
        key,
        ExtraArgs={
            "Metadata": {k: _s3_meta(v) for k, v in metadata.items()},
            "ContentType": "application/x-ndjson",
        },
        Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD),
    )


def _schema_metadata(result: FetchResult) -> dict[str, dg.MetadataValue]:
    schema = result.schema.as_dict()
    columns = [
        dg.TableColumn(
            name=field,
            type=" | ".join(kinds),
            description=f"present in {result.schema.present[field]}/{result.records} records",
        )
        for field, kinds in schema.items()
    ]
    return {
        "schema": dg.MetadataValue.json(schema),
        "schema_table": dg.MetadataValue.md(result.schema.markdown()),
        "dagster/column_schema": dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
    }


@dg.asset(
    key=API_SNAPSHOT,
    group_name="api_source",
    kinds={"s3"},
    description=(
        "Snapshot of the configured public JSON API (PublicApiResource) as JSON Lines under "
        "`api_snapshots/<name>/<yyyy>/<mm>/<dd>/` in the lake bucket, dated by the pull's UTC "
        "start. Every page or nothing: a failed pull lands nothing and fails with the HTTP status."
    ),
)
def api_snapshot(
    context: dg.AssetExecutionContext, public_api: PublicApiResource, lake: LakeResource
) -> dg.MaterializeResult:
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    name = public_api.name
    source = public_api.source_url()
    try:
        spec = public_api.fetch_spec()
    except ValueError as err:  # ApiConfigError included
        raise dg.Failure(description=f"api_snapshot {name}: bad configuration: {err}") from None
    key = snapshot_key(name, started)
    with tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".jsonl") as tmp:
        try:
            result = fetch_to_jsonl(spec, tmp, log=context.log.info)
        except ApiFetchError as err:
            raise dg.Failure(
                description=f"api_snapshot {name}: {err}; nothing landed",
                metadata={
                    "url": err.url,
                    "http_status": err.status if err.status is not None else "none",
                    "attempts": err.attempts,
                },
                allow_retries=False,
            ) from None
        fetch_seconds = time.monotonic() - clock
        context.log.info(
            f"{name}: {result.records} records in {result.pages} pages ({result.bytes} bytes, "
            f"{result.requests} requests) from {source}; landing s3://{lake.bucket}/{key}"
        )
        try:
            land_snapshot(
                tmp.name,
                lake.bucket,
                key,
                {
                    "records": str(result.records),
                    "pages": str(result.pages),
                    "source-url": source,
                    "fetched-at": started.isoformat(),
                    "api-name": name,
                    "dagster-run-id": context.run_id,
                },
            )
        except Exception as err:  # boto3 raises several unrelated types here
            raise dg.Failure(
                description=f"api_snapshot {name}: upload to s3://{lake.bucket}/{key} failed: "
                f"{type(err).__name__}: {err}"
            ) from None
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.records,
            "pages": result.pages,
            "requests": result.requests,
            "bytes": result.bytes,
            "s3_key": key,
            "s3_uri": dg.MetadataValue.path(f"s3://{lake.bucket}/{key}"),
            "source_url": source,
            "fetched_at": started.isoformat(),
            "fetch_seconds": round(fetch_seconds, 3),
            "elapsed_seconds": round(time.monotonic() - clock, 3),
            **_schema_metadata(result),
        }
    )
