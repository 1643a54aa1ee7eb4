"""``feedlot db`` and ``feedlot clients`` through click, against a real PostgreSQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from feedlot_pipeline.tools.cli import main
from feedlot_pipeline.warehouse.schema import head
from feedlot_pipeline.warehouse.store import Warehouse


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_clients_add_list_and_replace(runner: CliRunner, warehouse_url: str) -> None:
    result = runner.invoke(main, ["clients", "add", "FazendaTres", "fazenda_tres"])
    assert result.exit_code == 0, result.output
    assert "added: FazendaTres → fazenda_tres" in result.output
    assert (
        "unchanged" in runner.invoke(main, ["clients", "add", "FazendaTres", "fazenda_tres"]).output
    )

    clash = runner.invoke(main, ["clients", "add", "FazendaTres", "fazenda_quatro"])
    assert clash.exit_code == 1 and "--replace" in clash.output
    moved = runner.invoke(main, ["clients", "add", "FazendaTres", "fazenda_quatro", "--replace"])
    assert moved.exit_code == 0 and "replaced" in moved.output

    bad = runner.invoke(main, ["clients", "add", "X", "Fazenda Quatro"])
    assert bad.exit_code == 1 and "invalid fazenda" in bad.output

    listed = runner.invoke(main, ["clients", "list", "--url", warehouse_url])
    assert listed.exit_code == 0
    assert listed.output.splitlines() == [
        "FazendaDois  fazenda_dois",
        "FazendaTres  fazenda_quatro",
        "FazendaUm    fazenda_um",
    ]
    with Warehouse(warehouse_url) as wh:
        assert wh.clients()["FazendaTres"] == "fazenda_quatro"


def test_db_upgrade_and_current(runner: CliRunner, empty_pg_url: str) -> None:
    before = runner.invoke(main, ["db", "current", "--url", empty_pg_url])
    assert before.exit_code == 0 and "not migrated" in before.output
    up = runner.invoke(main, ["db", "upgrade", "--url", empty_pg_url])
    assert up.exit_code == 0, up.output
    assert f"at revision {head()}" in up.output
    after = runner.invoke(main, ["db", "current", "--url", empty_pg_url])
    assert after.output.strip() == f"{head()} (head)"


def test_clear_errors_without_url_or_server(runner: CliRunner, monkeypatch) -> None:
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL", raising=False)
    missing = runner.invoke(main, ["db", "upgrade"])
    assert missing.exit_code == 2 and "FEEDLOT_WAREHOUSE_URL" in missing.output
    unreachable = "postgresql+psycopg://postgres:secret@127.0.0.1:1/nowhere"
    down = runner.invoke(main, ["clients", "list", "--url", unreachable])
    assert down.exit_code == 1 and "cannot reach the warehouse" in down.output
    assert "secret" not in down.output
    unsupported = runner.invoke(main, ["db", "current", "--url", "sqlite:///x.db"])
    assert unsupported.exit_code == 1 and "unsupported warehouse database" in unsupported.output
