"""``feedlot query`` and ``feedlot report``: the analytics layer from the command line.

Both read the local stack's variables from ``.feedlot/env`` when FEEDLOT_WAREHOUSE_URL is not
set (as the other tools do), so after ``make dev`` / ``feedlot local up`` they need no setup.
"""

from __future__ import annotations

import contextlib
from datetime import date
from pathlib import Path

import click

from feedlot_pipeline.core.settings import LocalSettings, Settings, export


def adopt_stack_env() -> None:
    """Without FEEDLOT_WAREHOUSE_URL, take the unset variables from the local stack's env file."""
    if Settings().warehouse_url_value():
        return
    from feedlot_pipeline.local import stack

    # No local stack: the command itself says what is missing.
    with contextlib.suppress(Exception):
        export(stack.env(LocalSettings().state_dir), override=False)


def _format(table) -> str:  # noqa: ANN001 - pyarrow.Table
    names = table.column_names
    rows = table.to_pylist()
    cells = [[("" if r[n] is None else str(r[n])) for n in names] for r in rows]
    widths = [max([len(n), *(len(row[i]) for row in cells)]) for i, n in enumerate(names)]
    line = "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


@click.command()
@click.argument("sql")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
def query(sql: str, as_csv: bool) -> None:
    """Run SQL over the curated zone (views historico_consumo and consumo_diario, partition
    columns fazenda and dia), e.g.

    feedlot query "SELECT fazenda, dia, count(*) AS n, sum(consumo_real * quantidade_animais)
    AS kg FROM historico_consumo GROUP BY ALL ORDER BY ALL"
    """
    adopt_stack_env()
    from feedlot_pipeline.analytics.query import run_query

    try:
        table = run_query(sql)
    except Exception as err:  # noqa: BLE001 - DuckDB and S3 errors, shown as they are
        raise click.ClickException(f"{type(err).__name__}: {err}") from None
    if as_csv:
        import io

        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        click.echo(buffer.getvalue().decode(), nl=False)
    else:
        click.echo(_format(table))


@click.command()
@click.option("--farm", "fazenda", required=True, help="Farm (fazenda), e.g. fazenda_um.")
@click.option(
    "--day",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Day (YYYY-MM-DD); with --month, any day of the month.",
)
@click.option("--month", is_flag=True, help="The monthly report of the day's month.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write to (default: <state dir>/reports).",
)
@click.option("--upload", is_flag=True, help="Also put it in the processed bucket.")
def report(fazenda: str, day, month: bool, out: Path | None, upload: bool) -> None:  # noqa: ANN001
    """Write the farm report (HTML with charts) of a farm and day (or month); print its path."""
    adopt_stack_env()
    from feedlot_pipeline.analytics.report import build_report, publish_report, render_html
    from feedlot_pipeline.warehouse.store import Warehouse, WarehouseConfigError

    dia: date = day.date()
    try:
        wh = Warehouse.from_env()
    except WarehouseConfigError as err:
        raise click.ClickException(str(err)) from None
    try:
        data = build_report(wh, fazenda, dia, monthly=month)
    finally:
        wh.dispose()
    folder = (out or LocalSettings().state_dir / "reports") / fazenda
    folder.mkdir(parents=True, exist_ok=True)
    name = f"relatorio_{dia:%Y-%m}.html" if month else f"relatorio_{dia.isoformat()}.html"
    path = (folder / name).resolve()
    path.write_text(render_html(data), encoding="utf-8")
    if upload:
        from feedlot_pipeline.analytics.targets import AnalyticsTargets

        uri, _ = publish_report(AnalyticsTargets.from_settings(), data, dia)
        click.echo(f"uploaded {uri}", err=True)
    click.echo(
        f"{data.title}: {len(data.lots)} lots × pens, {data.animais:,} animals, "
        f"{data.total_kg:,.1f} kg fed, {len(data.anomalies)} anomalies",
        err=True,
    )
    click.echo(str(path))
