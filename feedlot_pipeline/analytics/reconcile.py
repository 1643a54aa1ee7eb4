"""Reconciliation and freshness across farms: what the hourly job and the per-farm checks run.

A reconciliation is a function ``(warehouse, farms, days) -> list[Mismatch]``; ``RECONCILIATIONS``
lists those the hourly job runs over the last ``FEEDLOT_RECONCILIATION_DAYS`` days of every farm,
and every mismatch is published as a failure document (``core.failures.report_failure``). The
raw-zone reconciliation (landed = loaded + rejected, from the loader's ledger) is added to the
list by the ingestion side; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from feedlot_pipeline.analytics import summary
from feedlot_pipeline.core.failures import report_failure
from feedlot_pipeline.core.records import UNROUTED_FARM
from feedlot_pipeline.warehouse.schema import clientes, consumo_diario
from feedlot_pipeline.warehouse.store import Warehouse

UTC = timezone.utc
FAILURE_SOURCE = "reconciliation"


@dataclass(frozen=True)
class Mismatch:
    """One farm × day where two things that must agree do not."""

    check: str
    fazenda: str
    dia: date
    expected: float
    found: float
    reason: str
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dia": self.dia.isoformat()}


Reconciliation = Callable[[Warehouse, Sequence[str], Sequence[date]], list[Mismatch]]


def consumo_diario_vs_historico(
    warehouse: Warehouse, farms: Sequence[str], days: Sequence[date]
) -> list[Mismatch]:
    """Rows of consumo_diario = distinct lots × pens of historico_consumo (and the kg totals
    agree), per farm × day. A partition loaded but never summarised shows up here."""
    partitions = [(f, d) for f in farms for d in days]
    if not partitions:
        return []
    with warehouse.engine.connect() as conn, conn.begin():
        found = summary.counts(conn, partitions)
    out = []
    for (fazenda, dia), c in sorted(found.items()):
        if c.reconciles:
            continue
        out.append(
            Mismatch(
                check="consumo_diario_vs_historico",
                fazenda=fazenda,
                dia=dia,
                expected=c.lots_expected,
                found=c.lots,
                reason=(
                    f"consumo_diario has {c.lots} rows for {fazenda} {dia}, historico_consumo "
                    f"{c.lots_expected} distinct lots x pens (kg {c.total_kg:.3f} vs "
                    f"{c.total_kg_historico:.3f}); rerun the partition's analytics"
                ),
                details={
                    "lots": c.lots,
                    "lots_expected": c.lots_expected,
                    "total_kg": c.total_kg,
                    "total_kg_historico": c.total_kg_historico,
                    "historico_rows": c.rows,
                },
            )
        )
    return out


# The lead's raw-zone check (landed in raw = loaded + rejected) is appended here.
RECONCILIATIONS: list[Reconciliation] = [consumo_diario_vs_historico]


def recent_days(today: date, days: int) -> list[date]:
    """``today`` and the ``days - 1`` days before it, newest first."""
    return [today - timedelta(days=i) for i in range(days)]


def known_farms(warehouse: Warehouse, extra: Sequence[str] = ()) -> list[str]:
    """Farms of the clientes reference table, plus ``extra`` (e.g. Dagster's farm partitions)."""
    with warehouse.engine.connect() as conn:
        farms = set(conn.execute(sa.select(sa.distinct(clientes.c.fazenda))).scalars())
    farms.update(extra)
    farms.discard(UNROUTED_FARM)
    return sorted(farms)


@dataclass(frozen=True)
class ReconciliationReport:
    farms: list[str]
    days: list[date]
    mismatches: list[Mismatch]
    published: list[str | None]

    @property
    def partitions_checked(self) -> int:
        return len(self.farms) * len(self.days)


def run_reconciliation(
    warehouse: Warehouse,
    farms: Sequence[str],
    days: Sequence[date],
    *,
    checks: Sequence[Reconciliation] | None = None,
    publish: bool = True,
    run_id: str | None = None,
) -> ReconciliationReport:
    """Run every reconciliation; publish each mismatch as a failure document."""
    mismatches: list[Mismatch] = []
    for check in RECONCILIATIONS if checks is None else checks:
        mismatches.extend(check(warehouse, farms, days))
    published: list[str | None] = []
    if publish:
        for m in mismatches:
            published.append(
                report_failure(
                    source=FAILURE_SOURCE,
                    stage=m.check,
                    reason=m.reason,
                    payload=m.as_dict(),
                    event_id=f"{m.check}-{m.fazenda}-{m.dia.isoformat()}",
                    details={"run_id": run_id, **m.details},
                )
            )
    return ReconciliationReport(list(farms), list(days), mismatches, published)


# --- freshness per farm ---


@dataclass(frozen=True)
class FarmFreshness:
    fazenda: str
    last_update: datetime | None  # newest row_ts behind consumo_diario (first processing time)
    age_hours: float | None
    overdue: bool


def farm_freshness(
    warehouse: Warehouse, farms: Sequence[str], now: datetime, max_age_hours: float
) -> list[FarmFreshness]:
    """When each farm last sent data that reached consumo_diario; overdue after the limit."""
    c = consumo_diario.c
    latest: dict[str, datetime | None] = {}
    with warehouse.engine.connect() as conn:
        for fazenda in farms:  # per farm: ranges of the primary key (fazenda, dia, …)
            newest = sa.select(sa.func.max(c.ultimo_processamento)).where(c.fazenda == fazenda)
            recent = newest.where(c.dia >= (now - timedelta(days=40)).date())
            latest[fazenda] = conn.execute(recent).scalar() or conn.execute(newest).scalar()
    out = []
    for fazenda in farms:
        ts = latest.get(fazenda)
        if ts is not None and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)  # MySQL holds naive UTC
        age = None if ts is None else (now - ts).total_seconds() / 3600
        out.append(FarmFreshness(fazenda, ts, age, age is None or age > max_age_hours))
    return out
