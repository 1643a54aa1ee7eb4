"""The farm report (numbers in the HTML, charts, a screenshot in headless Chromium) and
``feedlot query`` over the curated zone (its counts and sums equal the warehouse's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedlot_pipeline.analytics.partition import refresh_partitions
from feedlot_pipeline.analytics.query import run_query
from feedlot_pipeline.analytics.report import build_report, render_html
from feedlot_pipeline.tools.cli import main
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import consumo_record, load_records

D1, D2 = date(2023, 1, 1), date(2023, 1, 2)


def day_records() -> list[dict]:
    return [
        consumo_record(lote="11", curral="101", real=6.0, animals=40),
        consumo_record(lote="12", curral="102", real=9.6, animals=20),  # +51.5 %: anomaly
        consumo_record(day="2023-01-02", lote="11", curral="101", real=6.2, animals=40),
        consumo_record(day="2023-01-02", lote="12", curral="102", real=6.4, animals=20),
        consumo_record("FazendaDois", day="2023-01-02", lote="5", curral="9", real=7.0),
    ]


@pytest.fixture()
def refreshed(any_analytics_env):
    env = any_analytics_env
    parts = load_records(env, day_records())
    with Warehouse(env.warehouse_url) as wh:
        refresh_partitions(wh, env.targets, parts, notify=False)
    return env, parts


def test_report_html_holds_the_days_numbers(refreshed, tmp_path: Path) -> None:
    env, _ = refreshed
    with Warehouse(env.warehouse_url) as wh:
        data = build_report(wh, "fazenda_um", D2)
    page = render_html(data)
    assert data.animais == 60 and data.total_kg == pytest.approx(6.2 * 40 + 6.4 * 20)
    assert "376.00" in page  # kg fed on D2
    assert "6.267" in page  # real kg per head: 376 / 60
    assert "6.336" in page  # meta kg per head
    for lot in ("101", "102"):
        assert f"<td>{lot}</td>" in page
    # One real and one meta bar per lot; the trend has both days (a point per day and series).
    assert page.count('class="bar real"') == 2 and page.count('class="bar meta"') == 2
    assert page.count('class="point real"') == 2
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    with Warehouse(env.warehouse_url) as wh:
        first = build_report(wh, "fazenda_um", D1)
    assert len(first.anomalies) == 1 and first.anomalies[0].id_lote == "12"
    assert 'class="anomaly"' in render_html(first)

    with Warehouse(env.warehouse_url) as wh:
        month = build_report(wh, "fazenda_um", D1, monthly=True)
    assert month.period == "2023-01" and month.animais == 120
    assert month.total_kg == pytest.approx(6.0 * 40 + 9.6 * 20 + 376.0)


def test_report_command_writes_the_page_and_prints_its_path(refreshed, tmp_path: Path) -> None:
    env, _ = refreshed
    result = CliRunner().invoke(
        main, ["report", "--farm", "fazenda_um", "--day", "2023-01-02", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == tmp_path.resolve() / "fazenda_um" / "relatorio_2023-01-02.html"
    assert "376.00" in path.read_text(encoding="utf-8")
    month = CliRunner().invoke(
        main,
        [
            "report",
            "--farm",
            "fazenda_um",
            "--day",
            "2023-01-02",
            "--month",
            "--out",
            str(tmp_path),
        ],
    )
    assert month.exit_code == 0, month.output
    assert month.stdout.strip().endswith("relatorio_2023-01.html")


def test_empty_report_renders(analytics_env) -> None:
    with Warehouse(analytics_env.warehouse_url) as wh:
        data = build_report(wh, "fazenda_um", date(2023, 5, 1))
    page = render_html(data)
    assert "no lots this day" in page and "sem lotes" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(refreshed, tmp_path: Path) -> None:
    env, _ = refreshed
    with Warehouse(env.warehouse_url) as wh:
        page = render_html(build_report(wh, "fazenda_um", D2))
    html_path = tmp_path / "relatorio.html"
    html_path.write_text(page, encoding="utf-8")
    shot = tmp_path / "relatorio.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            html_path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 900)
    assert len(data) > 20_000  # a page with charts, not a blank one


def test_query_over_the_curated_zone_equals_the_warehouse(refreshed) -> None:
    env, parts = refreshed
    lake = run_query(
        "SELECT fazenda, dia, count(*) AS n, sum(consumo_real * quantidade_animais) AS kg "
        "FROM historico_consumo GROUP BY fazenda, dia ORDER BY fazenda, dia"
    ).to_pylist()
    with Warehouse(env.warehouse_url) as wh, wh.engine.connect() as conn:
        expected = {}
        for fazenda, dia in parts:
            n, kg = conn.execute(
                sa.text(
                    "SELECT count(*), sum(consumo_real * quantidade_animais) "
                    "FROM historico_consumo WHERE fazenda = :f AND data >= :a AND data < :b"
                ),
                {"f": fazenda, "a": dia, "b": date.fromordinal(dia.toordinal() + 1)},
            ).one()
            expected[(fazenda, dia)] = (n, float(kg))
    assert [(r["fazenda"], r["dia"]) for r in lake] == sorted(expected)
    for r in lake:
        n, kg = expected[(r["fazenda"], r["dia"])]
        assert r["n"] == n and r["kg"] == pytest.approx(kg)
    summary = run_query(
        "SELECT count(*) AS lots, sum(consumo_total_kg) AS kg FROM consumo_diario "
        "WHERE fazenda = 'fazenda_um' AND dia = DATE '2023-01-02'"
    ).to_pylist()
    assert summary == [{"lots": 2, "kg": pytest.approx(376.0)}]


def test_query_command_prints_a_table(refreshed) -> None:
    result = CliRunner().invoke(
        main, ["query", "SELECT fazenda, count(*) AS n FROM consumo_diario GROUP BY 1 ORDER BY 1"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(r"fazenda\s+n", lines[0])
    assert re.match(r"fazenda_dois\s+1", lines[2]) and re.match(r"fazenda_um\s+4", lines[3])
    bad = CliRunner().invoke(main, ["query", "SELECT * FROM nowhere"])
    assert bad.exit_code != 0 and "nowhere" in bad.output
