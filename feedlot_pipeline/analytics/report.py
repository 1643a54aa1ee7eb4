"""The farm report: one self-contained HTML page per farm and day (and per farm and month).

Built from consumo_diario (and the rejections of historico_consumo_rejeitados): the day's totals,
a table per lot × pen, a bar chart of consumo real vs meta per head per lot, and the trend of the
last ``FEEDLOT_REPORT_TREND_DAYS`` days. The charts are inline SVG drawn here: the page loads
nothing from anywhere, so it opens from S3, a laptop or a mail attachment alike.
"""

from __future__ import annotations

import calendar
import html
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from feedlot_pipeline.warehouse.schema import consumo_diario, historico_consumo_rejeitados
from feedlot_pipeline.warehouse.store import Warehouse

MAX_BARS = 60
REAL_COLOR = "#1f77b4"
META_COLOR = "#ff7f0e"


@dataclass
class Lot:
    id_lote: str
    id_curral: str
    animais: int
    real: float  # kg per head
    meta: float
    desvio_pct: float | None
    total_kg: float
    peso_medio: float
    dia_confinamento: int


@dataclass
class TrendPoint:
    dia: date
    animais: int
    total_kg: float
    real: float  # kg per head, weighted by animals
    meta: float


@dataclass
class ReportData:
    fazenda: str
    title: str
    period: str  # "2024-03-18" or "2024-03"
    lots: list[Lot]
    trend: list[TrendPoint]
    rejected: int
    threshold_pct: float
    monthly: bool = False
    trend_days: int = 30
    generated_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def animais(self) -> int:
        return sum(lot.animais for lot in self.lots)

    @property
    def total_kg(self) -> float:
        return sum(lot.total_kg for lot in self.lots)

    @property
    def real(self) -> float:
        return self.total_kg / self.animais if self.animais else 0.0

    @property
    def meta(self) -> float:
        return (
            sum(lot.meta * lot.animais for lot in self.lots) / self.animais if self.animais else 0.0
        )

    @property
    def desvio_pct(self) -> float | None:
        return 100 * (self.real - self.meta) / self.meta if self.meta else None

    @property
    def anomalies(self) -> list[Lot]:
        return [
            lot
            for lot in self.lots
            if lot.desvio_pct is not None and abs(lot.desvio_pct) > self.threshold_pct
        ]


# --- data ---


def _trend(conn: sa.Connection, fazenda: str, first: date, last: date) -> list[TrendPoint]:
    c = consumo_diario.c
    rows = conn.execute(
        sa.select(
            c.dia,
            sa.func.sum(c.quantidade_animais),
            sa.func.sum(c.consumo_total_kg),
            sa.func.sum(c.consumo_meta_cabeca * c.quantidade_animais),
        )
        .where(c.fazenda == fazenda, c.dia >= first, c.dia <= last)
        .group_by(c.dia)
        .order_by(c.dia)
    )
    out = []
    for dia, animals, kg, meta_kg in rows:
        n = int(animals or 0)
        out.append(
            TrendPoint(
                dia=dia if isinstance(dia, date) else dia.date(),
                animais=n,
                total_kg=float(kg or 0),
                real=float(kg or 0) / n if n else 0.0,
                meta=float(meta_kg or 0) / n if n else 0.0,
            )
        )
    return out


def _rejected(conn: sa.Connection, fazenda: str, first: date, last: date) -> int:
    r = historico_consumo_rejeitados.c
    return int(
        conn.execute(
            sa.select(sa.func.count()).where(r.fazenda == fazenda, r.dia >= first, r.dia <= last)
        ).scalar_one()
    )


def daily_report_data(
    warehouse: Warehouse, fazenda: str, dia: date, trend_days: int, threshold_pct: float
) -> ReportData:
    c = consumo_diario.c
    with warehouse.engine.connect() as conn:
        lots = [
            Lot(
                r.id_lote,
                r.id_curral,
                int(r.quantidade_animais),
                float(r.consumo_real_cabeca),
                float(r.consumo_meta_cabeca),
                None if r.desvio_pct is None else float(r.desvio_pct),
                float(r.consumo_total_kg),
                float(r.peso_medio),
                int(r.dia_confinamento),
            )
            for r in conn.execute(
                sa.select(consumo_diario)
                .where(c.fazenda == fazenda, c.dia == dia)
                .order_by(c.id_lote, c.id_curral)
            )
        ]
        trend = _trend(conn, fazenda, dia - timedelta(days=trend_days - 1), dia)
        rejected = _rejected(conn, fazenda, dia, dia)
    return ReportData(
        fazenda=fazenda,
        title=f"{fazenda} — {dia.isoformat()}",
        period=dia.isoformat(),
        lots=lots,
        trend=trend,
        rejected=rejected,
        threshold_pct=threshold_pct,
        trend_days=trend_days,
    )


def monthly_report_data(
    warehouse: Warehouse, fazenda: str, month: date, threshold_pct: float
) -> ReportData:
    """Per lot × pen over the month (animal-days, weighted per head), and the month's days."""
    first = month.replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    c = consumo_diario.c
    n = c.quantidade_animais
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                c.id_lote,
                c.id_curral,
                sa.func.sum(n),
                sa.func.sum(c.consumo_total_kg),
                sa.func.sum(c.consumo_meta_cabeca * n),
                sa.func.sum(c.peso_medio * n),
                sa.func.max(c.dia_confinamento),
            )
            .where(c.fazenda == fazenda, c.dia >= first, c.dia <= last)
            .group_by(c.id_lote, c.id_curral)
            .order_by(c.id_lote, c.id_curral)
        ).all()
        trend = _trend(conn, fazenda, first, last)
        rejected = _rejected(conn, fazenda, first, last)
    lots = []
    for lote, curral, animals, kg, meta_kg, peso_kg, dias in rows:
        a = int(animals or 0)
        real = float(kg or 0) / a if a else 0.0
        meta = float(meta_kg or 0) / a if a else 0.0
        lots.append(
            Lot(
                lote,
                curral,
                a,
                real,
                meta,
                100 * (real - meta) / meta if meta else None,
                float(kg or 0),
                float(peso_kg or 0) / a if a else 0.0,
                int(dias or 0),
            )
        )
    return ReportData(
        fazenda=fazenda,
        title=f"{fazenda} — {first:%Y-%m}",
        period=f"{first:%Y-%m}",
        lots=lots,
        trend=trend,
        rejected=rejected,
        threshold_pct=threshold_pct,
        monthly=True,
    )


# --- charts (inline SVG) ---


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bar_chart(lots: list[Lot], width: int = 1080, height: int = 320) -> str:
    """Grouped bars: consumo real and meta per head for each lot × pen (first MAX_BARS)."""
    shown = lots[:MAX_BARS]
    left, right, top, bottom = 56, 16, 24, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = _nice_max(max([max(lot.real, lot.meta) for lot in shown] or [0]) * 1.1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="consumo real vs meta per lot">'
    ]
    parts += _y_axis(left, top, plot_w, plot_h, ymax, "kg/cabeça")
    if not shown:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'class="empty">no lots this day</text></svg>'
        )
        return "".join(parts)
    group = plot_w / len(shown)
    bar = max(1.0, min(18.0, group * 0.38))
    for i, lot in enumerate(shown):
        x0 = left + i * group + group / 2 - bar
        for j, (value, color, name) in enumerate(
            ((lot.real, REAL_COLOR, "real"), (lot.meta, META_COLOR, "meta"))
        ):
            h = plot_h * value / ymax
            parts.append(
                f'<rect class="bar {name}" x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>lote {html.escape(lot.id_lote)} / curral {html.escape(lot.id_curral)}: "
                f"{name} {value:.3f} kg</title></rect>"
            )
        label = html.escape(f"{_short(lot.id_lote)}/{_short(lot.id_curral)}")
        cx = left + i * group + group / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{top + plot_h + 12}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {cx:.1f} {top + plot_h + 12})">{label}</text>'
        )
    parts += _legend(width - right - 210, 8, [("consumo real", REAL_COLOR), ("meta", META_COLOR)])
    parts.append("</svg>")
    return "".join(parts)


def _short(code: str, keep: int = 5) -> str:
    """The end of a long id (14-digit lots and pens): what tells them apart on a chart axis."""
    return code if len(code) <= keep + 1 else f"…{code[-keep:]}"


def line_chart(points: list[TrendPoint], width: int = 1080, height: int = 280) -> str:
    """consumo real and meta per head per day (the trend)."""
    left, right, top, bottom = 56, 16, 24, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = _nice_max(max([max(p.real, p.meta) for p in points] or [0]) * 1.1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="trend of consumo real vs meta">'
    ]
    parts += _y_axis(left, top, plot_w, plot_h, ymax, "kg/cabeça")
    if not points:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'class="empty">no data in the period</text></svg>'
        )
        return "".join(parts)
    step = plot_w / max(1, len(points) - 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        x = left + (i * step if len(points) > 1 else plot_w / 2)
        return x, top + plot_h - plot_h * value / ymax

    for name, color, attr in (("real", REAL_COLOR, "real"), ("meta", META_COLOR, "meta")):
        coords = [xy(i, getattr(p, attr)) for i, p in enumerate(points)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(
            f'<polyline class="line {name}" points="{path}" fill="none" stroke="{color}" '
            'stroke-width="2"/>'
        )
        for (x, y), p in zip(coords, points, strict=True):
            parts.append(
                f'<circle class="point {name}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                f"<title>{p.dia.isoformat()}: {name} {getattr(p, attr):.3f} kg</title></circle>"
            )
    every = max(1, len(points) // 10)
    for i, p in enumerate(points):
        if i % every == 0 or i == len(points) - 1:
            x, _ = xy(i, 0)
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 16}" font-size="10" '
                f'text-anchor="middle">{p.dia:%m-%d}</text>'
            )
    parts += _legend(width - right - 210, 8, [("consumo real", REAL_COLOR), ("meta", META_COLOR)])
    parts.append("</svg>")
    return "".join(parts)


def _y_axis(left: int, top: int, w: float, h: float, ymax: float, unit: str) -> list[str]:
    out = [f'<text x="4" y="{top - 8}" font-size="11">{unit}</text>']
    for k in range(5):
        value = ymax * k / 4
        y = top + h - h * k / 4
        out.append(
            f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{round(value, 2):g}</text>"
        )
    return out


def _legend(x: float, y: float, items: list[tuple[str, str]]) -> list[str]:
    out = []
    for i, (label, color) in enumerate(items):
        out.append(
            f'<rect x="{x + i * 110}" y="{y}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + i * 110 + 14}" y="{y + 9}" font-size="11">{label}</text>'
        )
    return out


# --- the page ---

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#666;font-size:12px}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.kpi{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:130px}
.kpi .v{font-size:20px;font-weight:600} .kpi .l{font-size:12px;color:#666}
table{border-collapse:collapse;font-size:12px} th,td{border-bottom:1px solid #eee;padding:3px 8px}
th{text-align:left;background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.anomaly td{background:#fff1f0}
"""


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_html(data: ReportData) -> str:
    """The whole page as text (UTF-8, no external resources)."""
    e = html.escape
    anomalies = {(lot.id_lote, lot.id_curral) for lot in data.anomalies}
    kpis = [
        ("animais", f"{data.animais:,}"),
        ("kg fornecidos", _num(data.total_kg)),
        ("consumo real kg/cab", _num(data.real, 3)),
        ("consumo meta kg/cab", _num(data.meta, 3)),
        ("desvio %", _num(data.desvio_pct)),
        ("lotes × currais", f"{len(data.lots):,}"),
        (f"lotes com |desvio| > {data.threshold_pct:g} %", f"{len(anomalies):,}"),
        ("registros rejeitados", f"{data.rejected:,}"),
    ]
    rows = []
    for lot in data.lots:
        css = ' class="anomaly"' if (lot.id_lote, lot.id_curral) in anomalies else ""
        rows.append(
            f"<tr{css}><td>{e(lot.id_lote)}</td><td>{e(lot.id_curral)}</td>"
            f'<td class="n">{lot.animais:,}</td><td class="n">{_num(lot.real, 3)}</td>'
            f'<td class="n">{_num(lot.meta, 3)}</td><td class="n">{_num(lot.desvio_pct)}</td>'
            f'<td class="n">{_num(lot.total_kg)}</td><td class="n">{_num(lot.peso_medio, 1)}</td>'
            f'<td class="n">{lot.dia_confinamento}</td></tr>'
        )
    shown = min(len(data.lots), MAX_BARS)
    note = f" (first {shown} of {len(data.lots)})" if len(data.lots) > MAX_BARS else ""
    trend_title = (
        "Tendência do mês"
        if data.monthly
        else f"Tendência dos últimos {data.trend_days} dias ({len(data.trend)} com dados)"
    )
    return f"""<!DOCTYPE html>
<html lang="pt-BR"><head><meta charset="utf-8">
<title>Relatório de consumo — {e(data.title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Relatório de consumo — {e(data.title)}</h1>
<div class="meta">fazenda {e(data.fazenda)} · período {e(data.period)} · gerado {
        e(data.generated_at)
    }
 · fonte: consumo_diario</div>
<div class="kpis">{
        "".join(
            f'<div class="kpi"><div class="v">{e(v)}</div><div class="l">{e(label)}</div></div>'
            for label, v in kpis
        )
    }</div>
<h2>Consumo real vs meta por lote (kg/cabeça){e(note)}</h2>
{bar_chart(data.lots)}
<h2>{e(trend_title)}</h2>
{line_chart(data.trend)}
<h2>Lotes × currais</h2>
<table><thead><tr><th>lote</th><th>curral</th><th>animais</th><th>real kg/cab</th>
<th>meta kg/cab</th><th>desvio %</th><th>kg fornecidos</th><th>peso médio</th>
<th>dias conf.</th></tr></thead>
<tbody>{"".join(rows) or '<tr><td colspan="9">sem lotes</td></tr>'}</tbody></table>
</body></html>
"""


def report_summary(data: ReportData) -> dict[str, Any]:
    """The numbers of a report, for metadata and the demo."""
    return {
        "lots": len(data.lots),
        "animals": data.animais,
        "total_kg": round(data.total_kg, 3),
        "consumo_real_cabeca": round(data.real, 4),
        "consumo_meta_cabeca": round(data.meta, 4),
        "desvio_pct": None if data.desvio_pct is None else round(data.desvio_pct, 3),
        "anomalies": len(data.anomalies),
        "rejected": data.rejected,
    }


def build_report(
    warehouse: Warehouse,
    fazenda: str,
    day: date,
    *,
    monthly: bool = False,
    settings: Any = None,
) -> ReportData:
    """The report's data: of ``day``, or of the month ``day`` falls in."""
    from feedlot_pipeline.core.settings import AnalyticsSettings

    s = settings or AnalyticsSettings()
    if monthly:
        return monthly_report_data(warehouse, fazenda, day, s.anomaly_threshold_pct)
    return daily_report_data(warehouse, fazenda, day, s.report_trend_days, s.anomaly_threshold_pct)


def publish_report(targets: Any, data: ReportData, day: date) -> tuple[str, str]:
    """Put the page in the processed bucket; (s3:// URI, key)."""
    from feedlot_pipeline.analytics.targets import put_object

    key = (
        targets.monthly_report_key(data.fazenda, day)
        if data.monthly
        else targets.report_key(data.fazenda, day)
    )
    uri = put_object(targets, key, render_html(data).encode("utf-8"), "text/html; charset=utf-8")
    return uri, key
