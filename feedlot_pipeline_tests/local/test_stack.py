"""``feedlot local up/status/env/down``: a whole local stack in a temp state dir on free ports.

PostgreSQL is FEEDLOT_TEST_DATABASE_URL's server (through FEEDLOT_WAREHOUSE_URL) when set, else
an embedded one, so this also runs on a machine without any database server.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from feedlot_pipeline.local import stack
from feedlot_pipeline.local.services import LOOPBACK, ServiceError, free_port, port_open
from feedlot_pipeline.tools.local import local


@pytest.fixture()
def database_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Use the test server's fresh databases when one is configured; else the stack's embedded."""
    server = os.environ.get("FEEDLOT_TEST_DATABASE_URL")
    if not server:
        yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    tag = uuid.uuid4().hex[:10]
    base = make_url(server)
    warehouse = base.set(database=f"feedlot_stack_{tag}").render_as_string(hide_password=False)
    dagster = (base.set(drivername="postgresql", database=f"dagster_stack_{tag}")).render_as_string(
        hide_password=False
    )
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", warehouse)
    monkeypatch.setenv("FEEDLOT_DAGSTER_STORAGE_URL", dagster)
    yield
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (f"feedlot_stack_{tag}", f"dagster_stack_{tag}"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_status_env_down_cycle(
    tmp_path: Path,
    clean_env: None,
    ports: dict[str, int],
    database_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "state"
    runner = CliRunner()
    names: dict = {}
    try:
        first = stack.up(state)
        names = {s.name: s for s in first.services}
        assert {"moto", "lambda_bridge"} <= set(names)
        assert "postgres" in names or "warehouse" in names
        assert all(s.alive for s in first.services)
        assert names["moto"].state == names["lambda_bridge"].state == "started"
        assert first.env["AWS_ENDPOINT_URL"] == f"http://{LOOPBACK}:{ports['FEEDLOT_MOTO_PORT']}"
        assert first.env["AWS_ACCESS_KEY_ID"] == "testing"
        assert first.env["FEEDLOT_WAREHOUSE_URL"].startswith("postgresql+psycopg://")
        assert first.env["FEEDLOT_DAGSTER_STORAGE_URL"].startswith("postgresql://")
        home = Path(first.env["DAGSTER_HOME"])
        assert "FEEDLOT_DAGSTER_STORAGE_URL" in (home / "dagster.yaml").read_text()
        assert first.bridge_endpoint.startswith(
            f"http://{LOOPBACK}:{ports['FEEDLOT_LAMBDA_PORT']}/"
        )
        assert stack.env(state) == first.env
        env_file = (state / "env").read_text()
        assert f"export AWS_ENDPOINT_URL={first.env['AWS_ENDPOINT_URL']}" in env_file

        # A shell that evaluated `feedlot local env` runs `up` again: everything is reused.
        for key, value in first.env.items():
            monkeypatch.setenv(key, value)
        second = stack.up(state)
        assert {s.name: s.state for s in second.services if s.name != "warehouse"} == {
            "moto": "reused",
            "lambda_bridge": "reused",
            "api_gateway": "reused",
            "ssm_agent": "reused",
            **({"postgres": "reused"} if "postgres" in names else {}),
        }
        assert second.env == first.env

        # The real SNS handler runs behind the bridge: a published record lands in the lake.
        from feedlot_pipeline.core.aws import client
        from feedlot_pipeline.core.settings import Settings
        from feedlot_pipeline.tools.produce import publish_files

        path = tmp_path / "one.jsonl"
        path.write_text(
            json.dumps(
                {
                    "id_curral": "10000000000001",
                    "id_raca": "28551700000020",
                    "id_lote": "20000000000001",
                    "peso_entrada": 250.0,
                    "peso_medio": 380.0,
                    "data": "2024-03-18 00:00:00 UTC",
                    "quantidade_animais": "40",
                    "dia_confinamento": "30",
                    "consumo_real": 8.4,
                    "cod_cliente": "FazendaUm",
                }
            )
        )
        assert publish_files([path], progress=False).ok
        s3 = client("s3")
        keys = _wait_for(
            lambda: [
                o["Key"]
                for o in s3.list_objects_v2(
                    Bucket=Settings().lake_bucket, Prefix="historico_diario/fazenda_um/2024/03/18/"
                ).get("Contents", [])
            ],
            15,
            "the raw object the SNS handler lands",
        )
        assert len(keys) == 1 and keys[0].endswith(".jsonl")
        bridge = _wait_for(
            lambda: next(
                (s for s in stack.status(state).services if "succeeded 1" in s.detail), None
            ),
            10,
            "the invocation to finish",
        )
        assert bridge.name == "lambda_bridge" and "failed 0, pending 0" in bridge.detail

        status = runner.invoke(local, ["status", "--state-dir", str(state)])
        assert status.exit_code == 0, status.output
        assert "received 1, succeeded 1, failed 0" in status.output
        printed = runner.invoke(local, ["env", "--state-dir", str(state)])
        assert printed.exit_code == 0
        assert printed.output == stack.export_lines(first.env)
    finally:
        stopped = stack.down(state)
    assert {s.name: s.state for s in stopped if s.name != "warehouse"} == {
        "lambda_bridge": "stopped",
        "moto": "stopped",
        "api_gateway": "stopped",
        "ssm_agent": "stopped",
        **({"postgres": "stopped"} if "postgres" in names else {}),
    }
    for var in ("FEEDLOT_MOTO_PORT", "FEEDLOT_LAMBDA_PORT", "FEEDLOT_INGEST_API_PORT"):
        assert not port_open(ports[var])
    after = runner.invoke(local, ["status", "--state-dir", str(state)])
    assert after.exit_code == 1
    assert "Down:" in after.output


@pytest.mark.parametrize(
    "variable",
    ["FEEDLOT_MOTO_PORT", "FEEDLOT_LAMBDA_PORT", "FEEDLOT_PG_PORT", "FEEDLOT_INGEST_API_PORT"],
)
def test_port_in_use_is_one_clear_line_and_starts_nothing(
    tmp_path: Path, clean_env: None, ports: dict[str, int], variable: str
) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, ports[variable]))
        squatter.listen()
        with pytest.raises(ServiceError, match=f"port {ports[variable]} .*set {variable}"):
            stack.up(tmp_path / "state")
        out = CliRunner().invoke(local, ["up", "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: port {ports[variable]}") and variable in lines[0]
    assert not list((tmp_path / "state" / "run").glob("*.json"))
    assert not (tmp_path / "state" / "postgres").exists()


def test_unreachable_warehouse_url_is_a_clear_error(
    tmp_path: Path, clean_env: None, ports: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", f"postgresql+psycopg://u@{LOOPBACK}:{dead}/w")
    out = CliRunner().invoke(local, ["up", "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 1
    assert f"FEEDLOT_WAREHOUSE_URL server {LOOPBACK}:{dead} does not answer" in out.output
    assert not port_open(ports["FEEDLOT_MOTO_PORT"])  # nothing was started


def test_status_and_env_without_a_stack(tmp_path: Path, clean_env: None) -> None:
    runner = CliRunner()
    status = runner.invoke(local, ["status", "--state-dir", str(tmp_path)])
    assert status.exit_code == 1
    assert "No local stack" in status.output
    env = runner.invoke(local, ["env", "--state-dir", str(tmp_path)])
    assert env.exit_code == 1
    assert "run `feedlot local up` first" in env.output
    down = runner.invoke(local, ["down", "--state-dir", str(tmp_path)])
    assert down.exit_code == 0
    assert "Nothing to stop" in down.output
