"""The README's record format stays the code's: every field and every rejection code is there."""

from __future__ import annotations

import re
from pathlib import Path

from feedlot_pipeline.core import records
from feedlot_pipeline.warehouse.verdicts import PARTITION_MISMATCH

ROOT = Path(__file__).parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_record_format_documents_every_field_and_rejection_code() -> None:
    section = _section("Record format")
    for field in records.REQUIRED_FIELDS:
        assert f"`{field}`" in section, field
    codes = set(re.findall(r'RecordError\(\s*"([a-z_]+)"', Path(records.__file__).read_text()))
    assert len(codes) >= 10
    for code in [*codes, PARTITION_MISMATCH]:
        assert f"`{code}`" in section, code
    assert "`_unrouted`" in section and "landed" in section  # where a bad date is filed


def test_sns_body_shapes_and_the_correlation_id_are_documented() -> None:
    section = _section("Sources")
    for shape in ('"records"', "JSON array", "JSON Lines", "`correlation_id`", "MessageId"):
        assert shape in section, shape
