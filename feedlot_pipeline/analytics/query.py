"""SQL over the curated zone, locally: DuckDB on pyarrow datasets read from S3 (the moto endpoint
locally, AWS when deployed). Needs nothing from the internet: no DuckDB extension is loaded —
pyarrow's own S3 filesystem reads the Parquet files and DuckDB scans the datasets (with
projection and filter pushdown), exposed as the views ``historico_consumo`` and
``consumo_diario`` with their partition columns ``fazenda`` and ``dia``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from feedlot_pipeline.analytics.curated import TABLES
from feedlot_pipeline.analytics.targets import AnalyticsTargets
from feedlot_pipeline.core.settings import Settings

PARTITIONING = ds.partitioning(
    pa.schema([("fazenda", pa.string()), ("dia", pa.date32())]), flavor="hive"
)


def s3_filesystem(settings: Settings | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem on the endpoint and region boto3 would use."""
    import boto3

    s = settings or Settings()
    credentials = boto3.session.Session().get_credentials()
    options: dict[str, Any] = {"region": s.region}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token,
        )
    if s.aws_endpoint_url:
        parsed = urlparse(s.aws_endpoint_url)
        options.update(
            endpoint_override=parsed.netloc,
            scheme=parsed.scheme or "http",
            force_virtual_addressing=False,
        )
    return pafs.S3FileSystem(**options)


def curated_dataset(
    name: str, targets: AnalyticsTargets | None = None, fs: pafs.FileSystem | None = None
) -> ds.Dataset:
    t = targets or AnalyticsTargets.from_settings()
    table = TABLES[name]
    base = f"{t.bucket}/{table.prefix(t.curated_prefix)}".rstrip("/")
    fs = fs or s3_filesystem()
    try:
        return ds.dataset(
            base,
            filesystem=fs,
            format="parquet",
            partitioning=PARTITIONING,
            schema=_with_keys(table.schema),
        )
    except FileNotFoundError:
        return ds.dataset(pa.Table.from_batches([], schema=_with_keys(table.schema)))


def _with_keys(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("fazenda", pa.string())).append(pa.field("dia", pa.date32()))


def connect(targets: AnalyticsTargets | None = None):
    """A DuckDB connection with both curated tables registered as views."""
    import duckdb

    fs = s3_filesystem()
    con = duckdb.connect()
    for name in TABLES:
        con.register(name, curated_dataset(name, targets, fs))
    return con


def run_query(sql: str, targets: AnalyticsTargets | None = None) -> pa.Table:
    """The result of ``sql`` over the curated zone, as an Arrow table."""
    con = connect(targets)
    try:
        relation = con.sql(sql)
        return pa.table({}) if relation is None else relation.to_arrow_table()
    finally:
        con.close()
