"""What the warehouse says about one raw line, written once for every path that loads or judges.

A line ends in exactly one of these:

- a **row** of historico_consumo (new, or a later landing replacing the stored version);
- **unchanged**: identical to the stored version (a redelivery) — no rejection, nothing written;
- **superseded**: a changed version that landed before the stored one, or before another version
  of the same record in the same load — kept in historico_consumo_versoes, not a rejection;
- a **rejection** with a stable code and a readable reason: the record is wrong (a ``clean``
  error), or it is in a partition it does not belong to (``partition_mismatch``). The same bad
  line delivered again (same partition, fingerprint and code) is that rejection again: counted
  unchanged, not filed twice.

Within one load, two different versions of the same record: the later in landing order (the
landed object's time, then its key, then the line) wins, as it would across loads, so the result
does not depend on how objects were batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from feedlot_pipeline.core.records import DATA, FAZENDA

PARTITION_MISMATCH = "partition_mismatch"


@dataclass(slots=True)
class Rejection:
    """A raw line that could not be loaded, with a stable reason code and a readable reason.

    ``fazenda``/``dia`` name the partition it was read from: set by the loader from the object's
    key, or by ``Warehouse.replace_rejections`` from its arguments.
    """

    raw_object_key: str
    line_no: int
    reason_code: str
    reason: str
    raw_record: str
    cod_cliente: str | None = None
    fazenda: str | None = None
    dia: date | None = None
    correlation_id: str | None = None
    record_fp: int | None = None  # the line's fingerprint: the same bad record is one rejection

    def identity(self) -> tuple:
        """What makes two rejections the same: partition, the line's fingerprint, the code."""
        return (self.fazenda, self.dia, self.record_fp, self.reason_code)


def rejection(
    object_key: str,
    line_no: int,
    code: str,
    reason: str,
    line: bytes | str,
    raw: Any,
    correlation_id: str | None = None,
    partition: tuple[str, date] | None = None,
    record_fp: int | None = None,
) -> Rejection:
    """The rejection of one line: its text as received, and its client when it has one."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
    cod = raw.get("cod_cliente") if isinstance(raw, dict) else None
    return Rejection(
        raw_object_key=object_key,
        line_no=line_no,
        reason_code=code,
        reason=reason,
        raw_record=text,
        cod_cliente=cod if isinstance(cod, str) else None,
        fazenda=partition[0] if partition else None,
        dia=partition[1] if partition else None,
        correlation_id=correlation_id,
        record_fp=record_fp,
    )


def misplaced(row: tuple, expected: tuple[str, date] | None) -> str | None:
    """Why a cleaned row does not belong to the partition it was read from; None when it does."""
    if expected is None:
        return None
    fazenda, dia = row[FAZENDA], row[DATA].date()
    if fazenda == expected[0] and dia == expected[1]:
        return None
    return f"record belongs to partition {fazenda}/{dia}, not {expected[0]}/{expected[1]}"


def superseded_reason(winner_key: str, winner_line: int) -> str:
    return f"superseded by a later landing: {winner_key} line {winner_line}"
