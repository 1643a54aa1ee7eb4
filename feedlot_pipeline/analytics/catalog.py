"""The Glue Data Catalog of the curated lake: database, typed tables, one partition per farm × day.

Registered by the code that writes the files (no crawler run), so Athena sees a partition as soon
as its Parquet exists. Everything is idempotent: ``ensure_catalog`` creates what is missing and
brings a table's definition up to date, ``register_partitions`` creates new partitions and leaves
existing ones (same location, same columns) alone, so a rerun never duplicates a partition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import date
from typing import Any

from feedlot_pipeline.analytics.curated import PARTITION_KEYS, TABLES, CuratedTable, glue_columns
from feedlot_pipeline.analytics.targets import AnalyticsOutputError, AnalyticsTargets
from feedlot_pipeline.core.aws import client

_PARQUET_IN = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
_PARQUET_OUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
_PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
_BATCH = 100  # BatchCreatePartition takes at most 100
_ENSURED: set[tuple] = set()


def _explain(what: str, err: Exception) -> AnalyticsOutputError:
    return AnalyticsOutputError(
        f"Glue Data Catalog: cannot {what}: {type(err).__name__}: {err}. consumo_diario was "
        "left as it was; rerun the partition once Glue is reachable."
    )


def storage_descriptor(table: CuratedTable, location: str) -> dict[str, Any]:
    return {
        "Columns": glue_columns(table),
        "Location": location,
        "InputFormat": _PARQUET_IN,
        "OutputFormat": _PARQUET_OUT,
        "SerdeInfo": {"SerializationLibrary": _PARQUET_SERDE, "Parameters": {}},
        "Compressed": True,
    }


def table_input(targets: AnalyticsTargets, table: CuratedTable) -> dict[str, Any]:
    location = f"s3://{targets.bucket}/{table.prefix(targets.curated_prefix)}"
    return {
        "Name": table.name,
        "Description": f"Curated {table.source} (Parquet, one file per farm x day)",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": n, "Type": t} for n, t in PARTITION_KEYS],
        "StorageDescriptor": storage_descriptor(table, location),
    }


def ensure_catalog(targets: AnalyticsTargets, *, force: bool = False) -> None:
    """Create the database and both tables if missing, update a table whose definition differs.

    Cached per process and target (the first partition of a run pays for it).
    """
    key = (targets.glue_database, targets.bucket, targets.curated_prefix)
    if key in _ENSURED and not force:
        return
    glue = client("glue")
    try:
        try:
            glue.get_database(Name=targets.glue_database)
        except glue.exceptions.EntityNotFoundException:
            with contextlib.suppress(glue.exceptions.AlreadyExistsException):
                glue.create_database(
                    DatabaseInput={
                        "Name": targets.glue_database,
                        "Description": "feedlot_pipeline curated lake (Parquet in the processed "
                        "bucket)",
                    }
                )
        for table in TABLES.values():
            wanted = table_input(targets, table)
            try:
                found = glue.get_table(DatabaseName=targets.glue_database, Name=table.name)["Table"]
            except glue.exceptions.EntityNotFoundException:
                with contextlib.suppress(glue.exceptions.AlreadyExistsException):
                    glue.create_table(DatabaseName=targets.glue_database, TableInput=wanted)
                continue
            if _differs(found, wanted):
                glue.update_table(DatabaseName=targets.glue_database, TableInput=wanted)
    except AnalyticsOutputError:
        raise
    except Exception as err:  # noqa: BLE001 - botocore errors of every kind, explained
        raise _explain(f"set up database {targets.glue_database!r}", err) from err
    _ENSURED.add(key)


def _differs(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    sd = found.get("StorageDescriptor", {})
    return (
        [(c["Name"], c["Type"]) for c in sd.get("Columns", [])]
        != [(c["Name"], c["Type"]) for c in wanted["StorageDescriptor"]["Columns"]]
        or sd.get("Location") != wanted["StorageDescriptor"]["Location"]
        or [(k["Name"], k["Type"]) for k in found.get("PartitionKeys", [])]
        != [(k["Name"], k["Type"]) for k in wanted["PartitionKeys"]]
    )


def register_partitions(
    targets: AnalyticsTargets, table: CuratedTable, partitions: Sequence[tuple[str, date]]
) -> int:
    """Register farm × day partitions of ``table`` (100 per call); how many were new."""
    ensure_catalog(targets)
    glue = client("glue")
    created = 0
    unique = list(dict.fromkeys(partitions))
    for start in range(0, len(unique), _BATCH):
        chunk = unique[start : start + _BATCH]
        inputs = [
            {
                "Values": [fazenda, dia.isoformat()],
                "StorageDescriptor": storage_descriptor(
                    table,
                    table.partition_location(targets.bucket, targets.curated_prefix, fazenda, dia),
                ),
                "Parameters": {},
            }
            for fazenda, dia in chunk
        ]
        try:
            response = glue.batch_create_partition(
                DatabaseName=targets.glue_database,
                TableName=table.name,
                PartitionInputList=inputs,
            )
        except Exception as err:  # noqa: BLE001 - explained
            raise _explain(f"register partitions of {table.name}", err) from err
        errors = [
            e
            for e in response.get("Errors", [])
            if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
        ]
        if errors:
            detail = errors[0].get("ErrorDetail", {})
            raise AnalyticsOutputError(
                f"Glue Data Catalog: {len(errors)} partition(s) of {table.name} not registered, "
                f"e.g. {errors[0].get('PartitionValues')}: {detail.get('ErrorCode')}: "
                f"{detail.get('ErrorMessage')}. Rerun the partition."
            )
        created += len(chunk) - sum(
            1 for e in response.get("Errors", []) if e.get("ErrorDetail", {}).get("ErrorCode")
        )
    return created


def partition_values(targets: AnalyticsTargets, table: CuratedTable) -> list[tuple[str, str]]:
    """Every registered (fazenda, dia) of a table (tests, the query command)."""
    glue = client("glue")
    out: list[tuple[str, str]] = []
    for page in glue.get_paginator("get_partitions").paginate(
        DatabaseName=targets.glue_database, TableName=table.name
    ):
        out.extend(tuple(p["Values"]) for p in page["Partitions"])
    return sorted(out)
