"""The per-asset path of the analytics (Dagster UI, backfills): one asset, one partition.

What the analytics assets and checks of ``assets`` call when they are materialized on their own;
the batch path (``partition.refresh_partitions``) does the same work for many partitions in one
pass. Both report through ``outcomes``.
"""

from __future__ import annotations

import calendar
import io
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from feedlot_pipeline.analytics import catalog, describe, summary
from feedlot_pipeline.analytics.curated import (
    HISTORICO,
    CuratedTable,
    ParquetBuffer,
    iter_partition_batches,
    parquet_rows,
)
from feedlot_pipeline.analytics.outcomes import ANOMALIES_LISTED, CheckOutcome, row_count_outcome
from feedlot_pipeline.analytics.summary import PartitionCounts
from feedlot_pipeline.analytics.targets import AnalyticsTargets, put_object
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import AnalyticsSettings
from feedlot_pipeline.warehouse.store import Warehouse


def rebuild_summary(
    warehouse: Warehouse, fazenda: str, dia: date, settings: AnalyticsSettings | None = None
) -> tuple[PartitionCounts, list[dict[str, Any]], int]:
    """Rebuild consumo_diario of one partition (committed); its counts and anomalies."""
    settings = settings or AnalyticsSettings()
    with summary.connect(warehouse) as conn, conn.begin():
        summary.rebuild(conn, [(fazenda, dia)])
        c = summary.counts(conn, [(fazenda, dia)])[(fazenda, dia)]
        n = summary.count_anomalies(conn, [(fazenda, dia)], settings.anomaly_threshold_pct)
        listed = summary.anomalies(
            conn, fazenda, dia, settings.anomaly_threshold_pct, ANOMALIES_LISTED
        )
    return c, listed, n[(fazenda, dia)]


def partition_counts(warehouse: Warehouse, fazenda: str, dia: date) -> PartitionCounts:
    with summary.connect(warehouse) as conn, conn.begin():
        return summary.counts(conn, [(fazenda, dia)])[(fazenda, dia)]


def anomalies_now(
    warehouse: Warehouse, fazenda: str, dia: date, threshold: float
) -> tuple[int, list[dict[str, Any]]]:
    with summary.connect(warehouse) as conn, conn.begin():
        n = summary.count_anomalies(conn, [(fazenda, dia)], threshold)[(fazenda, dia)]
        return n, summary.anomalies(conn, fazenda, dia, threshold, ANOMALIES_LISTED)


@dataclass(frozen=True)
class DescribeResult:
    uri: str
    records: list[dict[str, Any]]
    headline: dict[str, Any]
    markdown: str


def write_describe(
    warehouse: Warehouse, targets: AnalyticsTargets, fazenda: str, dia: date
) -> DescribeResult:
    """The describe CSV of one farm × day partition of historico_consumo."""
    numeric = describe.NumericColumns()
    columns = list(describe.DESCRIBE_COLUMNS)
    with summary.connect(warehouse) as conn, conn.begin():
        for batch in iter_partition_batches(conn, HISTORICO, fazenda, dia, columns):
            numeric.add(batch)
    stats = numeric.describe()
    key = targets.describe_key(fazenda, dia)
    uri = put_object(targets, key, describe.to_csv(stats), "text/csv")
    return DescribeResult(
        uri, describe.summary_records(stats), describe.headline(stats), describe.markdown(stats)
    )


def write_monthly_describe(
    warehouse: Warehouse, targets: AnalyticsTargets, fazenda: str, month: date
) -> DescribeResult:
    """The describe CSV of one farm's month (every day partition of the month)."""
    numeric = describe.NumericColumns()
    columns = list(describe.DESCRIBE_COLUMNS)
    days = calendar.monthrange(month.year, month.month)[1]
    with summary.connect(warehouse) as conn, conn.begin():
        for day in range(1, days + 1):
            dia = month.replace(day=day)
            for batch in iter_partition_batches(conn, HISTORICO, fazenda, dia, columns):
                numeric.add(batch)
    stats = numeric.describe()
    key = targets.monthly_describe_key(fazenda, month)
    uri = put_object(targets, key, describe.to_csv(stats), "text/csv")
    return DescribeResult(
        uri, describe.summary_records(stats), describe.headline(stats), describe.markdown(stats)
    )


@dataclass(frozen=True)
class CuratedResult:
    uri: str
    rows: int
    bytes: int
    new_partition: bool


def write_curated(
    warehouse: Warehouse, targets: AnalyticsTargets, table: CuratedTable, fazenda: str, dia: date
) -> CuratedResult:
    """One table's Parquet file of one partition, and its Glue partition."""
    catalog.ensure_catalog(targets)
    buffer = ParquetBuffer(table.schema)
    with summary.connect(warehouse) as conn, conn.begin():
        for batch in iter_partition_batches(conn, table, fazenda, dia):
            buffer.write(batch)
    data = buffer.finish()
    key = table.key(targets.curated_prefix, fazenda, dia)
    uri = put_object(targets, key, data, "application/vnd.apache.parquet")
    created = catalog.register_partitions(targets, table, [(fazenda, dia)])
    return CuratedResult(uri, parquet_rows(data), len(data), bool(created))


def stored_parquet_rows(
    targets: AnalyticsTargets, table: CuratedTable, fazenda: str, dia: date
) -> int | None:
    """Rows of the Parquet file in the bucket (its footer); None when there is no file."""
    key = table.key(targets.curated_prefix, fazenda, dia)
    s3 = client("s3")
    try:
        body = s3.get_object(Bucket=targets.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    import pyarrow.parquet as pq

    return pq.read_metadata(io.BytesIO(body)).num_rows


def warehouse_rows(warehouse: Warehouse, table: CuratedTable, fazenda: str, dia: date) -> int:
    c = partition_counts(warehouse, fazenda, dia)
    return c.rows if table is HISTORICO else c.lots


def stored_row_count_outcome(
    warehouse: Warehouse, targets: AnalyticsTargets, table: CuratedTable, fazenda: str, dia: date
) -> CheckOutcome:
    """The row-count check as the UI path runs it: the file in the bucket vs the warehouse."""
    stored = stored_parquet_rows(targets, table, fazenda, dia)
    rows = warehouse_rows(warehouse, table, fazenda, dia)
    if stored is None:
        return replace(
            row_count_outcome(table, -1, rows),
            passed=False,
            metadata={"parquet_rows": None, "warehouse_rows": rows},
            description=f"no Parquet file at {table.key(targets.curated_prefix, fazenda, dia)}",
        )
    return row_count_outcome(table, stored, rows)
