"""The describe summaries equal pandas.DataFrame.describe(), on awkward inputs too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feedlot_pipeline.analytics.describe import (
    COLUMNS,
    NumericColumns,
    describe,
    describe_arrays,
    headline,
    to_csv,
)


@pytest.mark.parametrize("rows", [0, 1, 2, 7, 1000])
def test_numpy_describe_equals_pandas_describe(rows: int) -> None:
    rng = np.random.default_rng(rows)
    data = {name: rng.normal(300, 50, rows) for name in COLUMNS}
    if rows > 2:
        data["peso_medio"][1] = np.nan  # pandas skips NaN; so must we
        data["consumo_meta"][:] = 6.0  # constant column: std 0
    ours = describe_arrays(data)
    theirs = describe(pd.DataFrame(data))
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-12, atol=1e-12)


def test_numeric_columns_from_arrow_batches_and_csv() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "peso_entrada": [200.0, 220.0],
            "peso_medio": [300.0, 320.0],
            "quantidade_animais": pa.array([10, 30], pa.int32()),
            "dia_confinamento": pa.array([5, 6], pa.int32()),
            "consumo_real": [6.0, 9.0],
            "consumo_meta": [6.0, 6.0],
        }
    )
    numeric = NumericColumns()
    numeric.add(batch)
    numeric.add(batch.slice(0, 0))  # an empty batch changes nothing
    summary = numeric.describe()
    assert summary.loc["count", "consumo_real"] == 2
    assert summary.loc["mean", "desvio_pct"] == pytest.approx(25.0)
    assert headline(summary) == {
        "rows": 2,
        "mean_consumo_real": 7.5,
        "mean_consumo_meta": 6.0,
        "mean_desvio_pct": 25.0,
    }
    lines = to_csv(summary).decode().splitlines()
    assert lines[0] == "estatistica," + ",".join(COLUMNS)
    assert lines[1].startswith("count,2.000000,")


def test_empty_partition_csv_has_header_and_no_nan() -> None:
    text = to_csv(NumericColumns().describe()).decode()
    assert text.splitlines()[0] == "estatistica," + ",".join(COLUMNS)
    assert "nan" not in text.lower()
    assert text.splitlines()[2] == "mean" + "," * len(COLUMNS)
