"""Describe summaries: ``pandas.DataFrame.describe()`` of a partition's numeric columns, as CSV.

The counterpart of the original case's Glue Python job (seed 003: JSON from S3 → DataFrame →
``describe().to_csv()`` → the processed bucket). The frame covers historico_consumo's numeric
columns plus ``desvio_pct`` per row ((consumo_real − consumo_meta) / consumo_meta × 100). An empty
partition still gives every statistic row and column (count 0, the others empty), never a CSV
without a header.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feedlot_pipeline.analytics.curated import DESCRIBE_COLUMNS

COLUMNS = (*DESCRIBE_COLUMNS, "desvio_pct")
STATISTICS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
INDEX_LABEL = "estatistica"


class NumericColumns:
    """Accumulates the describe columns of record batches (float64), a partition at a time."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.num_rows:
            return
        for name in DESCRIBE_COLUMNS:
            self._chunks[name].append(_floats(batch.column(name)))
        real = batch.column("consumo_real")
        meta = batch.column("consumo_meta")
        deviation = pc.multiply(pc.divide(pc.subtract(real, meta), meta), 100.0)
        self._chunks["desvio_pct"].append(_floats(deviation))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: (np.concatenate(parts) if parts else np.empty(0, dtype="float64"))
            for name, parts in self._chunks.items()
        }

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.arrays(), columns=list(COLUMNS))

    def describe(self) -> pd.DataFrame:
        """The describe summary of every row added (``describe_arrays``)."""
        return describe_arrays(self.arrays())


def _floats(column: Any) -> np.ndarray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.cast(pa.float64()).to_numpy(zero_copy_only=False)


def describe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame.describe()`` with every statistic row, also for an empty frame."""
    out = frame.astype("float64").describe()
    return out.reindex(list(STATISTICS))


def describe_arrays(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """What ``describe(pd.DataFrame(columns))`` returns, computed with numpy in one pass.

    Same statistics and the same definitions as pandas (count of non-NaN values, mean, sample
    standard deviation, linear-interpolated quartiles, min, max; NaN where pandas gives NaN),
    equal to ``DataFrame.describe()`` to the last bit in the tests; about 40× cheaper per call,
    which is what a batch of 1,000 small partitions spends its time on otherwise.
    """
    names = list(columns)
    stats = np.full((len(STATISTICS), len(names)), np.nan)
    for j, name in enumerate(names):
        values = np.asarray(columns[name], dtype="float64")
        values = values[~np.isnan(values)]
        n = values.size
        stats[0, j] = n
        if n == 0:
            continue
        stats[1, j] = values.mean()
        if n > 1:
            stats[2, j] = values.std(ddof=1)
        stats[3, j] = values.min()
        stats[4:7, j] = np.percentile(values, [25, 50, 75])
        stats[7, j] = values.max()
    return pd.DataFrame(stats, index=list(STATISTICS), columns=names)


def to_csv(summary: pd.DataFrame) -> bytes:
    """The CSV written to S3: a header of column names, one row per statistic, empty for NaN."""
    return summary.to_csv(index_label=INDEX_LABEL, float_format="%.6f").encode("utf-8")


def summary_records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for a Dagster table: statistic → value per column (None for NaN)."""
    out = []
    for stat, row in summary.iterrows():
        record: dict[str, Any] = {INDEX_LABEL: str(stat)}
        for column in summary.columns:
            value = float(row[column])
            record[str(column)] = None if math.isnan(value) else round(value, 6)
        out.append(record)
    return out


def headline(summary: pd.DataFrame) -> dict[str, float | int]:
    """The numeric metadata the Dagster UI plots across partitions."""

    def value(stat: str, column: str) -> float:
        v = float(summary.loc[stat, column])
        return 0.0 if math.isnan(v) else round(v, 6)

    return {
        "rows": int(value("count", "consumo_real")),
        "mean_consumo_real": value("mean", "consumo_real"),
        "mean_consumo_meta": value("mean", "consumo_meta"),
        "mean_desvio_pct": value("mean", "desvio_pct"),
    }


def markdown(summary: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    """The summary as a Markdown table (the asset's metadata)."""
    chosen = list(columns or summary.columns)
    lines = [
        "| " + " | ".join([INDEX_LABEL, *chosen]) + " |",
        "|" + "---|" * (len(chosen) + 1),
    ]
    for stat, row in summary.iterrows():
        cells = []
        for column in chosen:
            v = float(row[column])
            cells.append("" if math.isnan(v) else f"{v:,.3f}")
        lines.append("| " + " | ".join([str(stat), *cells]) + " |")
    return "\n".join(lines)
