"""``feedlot local up/status/env/down``: a whole local stack in a temp state dir on free ports.

PostgreSQL is FEEDLOT_TEST_DATABASE_URL's server (through FEEDLOT_WAREHOUSE_URL) when set, else
an embedded one, so this also runs on a machine without any database server.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feedlot_pipeline.core.settings import DEFAULTS, LocalSettings
from feedlot_pipeline.local import components, databases, stack
from feedlot_pipeline.local.services import (
    EPHEMERAL_PORTS,
    LOOPBACK,
    ServiceError,
    check_database_name,
    ensure_database,
    free_port,
    port_open,
)
from feedlot_pipeline.local.state import state_paths
from feedlot_pipeline.tools.local import local


@pytest.fixture()
def database_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Use a fresh warehouse database on the test server when one is configured (Dagster's storage
    then defaults to <it>_dagster beside it); else the stack's embedded PostgreSQL."""
    server = os.environ.get("FEEDLOT_TEST_DATABASE_URL")
    if not server:
        yield
        return
    tag = uuid.uuid4().hex[:10]
    base = make_url(server)
    warehouse = base.set(database=f"feedlot_stack_{tag}").render_as_string(hide_password=False)
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", warehouse)  # Dagster's beside it, by default
    yield
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (f"feedlot_stack_{tag}", f"feedlot_stack_{tag}_dagster"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def assert_private(state: Path) -> None:
    """Files that may hold a password, the API key or records: 0600; their folders: 0700."""
    files = [state / "env", *(state / "run").glob("*.json"), *(state / "logs").glob("*.log")]
    assert state / "run" / "postgres.json" in files
    postgres = state / "postgres"
    if postgres.exists():  # the embedded server's folder and log (owned by its own user as root)
        files.append(postgres / "postgres.log")
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((state / "logs").stat().st_mode) == 0o700
    for folder in (
        state,
        state / "run",
        state / "logs",
        *([postgres] if postgres.exists() else []),
    ):
        mode = stat.S_IMODE(folder.stat().st_mode)
        # 0700; as root "others may traverse" (x) is added for the PostgreSQL server's user
        assert mode & ~0o001 == 0o700, (folder, oct(mode))
    assert stat.S_IMODE((state / "run").stat().st_mode) == 0o700


def _our_processes(state: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(state) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


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
        assert_private(state)
        dagster_db = make_url(first.env["FEEDLOT_DAGSTER_STORAGE_URL"]).database
        if "postgres" not in names:  # beside a configured warehouse: <warehouse db>_dagster
            warehouse_db = make_url(first.env["FEEDLOT_WAREHOUSE_URL"]).database
            assert dagster_db == f"{warehouse_db}_dagster"

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
        from feedlot_pipeline.tools.produce.command import publish_files

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
    [
        "FEEDLOT_MOTO_PORT",
        "FEEDLOT_LAMBDA_PORT",
        "FEEDLOT_PG_PORT",
        "FEEDLOT_INGEST_API_PORT",
        "FEEDLOT_SSM_AGENT_PORT",
    ],
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


def test_a_failing_up_stops_what_it_started(
    tmp_path: Path,
    clean_env: None,
    ports: dict[str, int],
    database_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SSM agent's port is taken after the ports were checked (a race, or a slow squatter):
    `up` fails with the agent's error and stops moto, PostgreSQL, bridge and gateway again."""
    state = tmp_path / "state"
    monkeypatch.setattr(stack, "_check_ports_first", lambda *args, **kwargs: None)
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, ports["FEEDLOT_SSM_AGENT_PORT"]))
        squatter.listen()
        with pytest.raises(ServiceError, match="set FEEDLOT_SSM_AGENT_PORT"):
            stack.up(state)
    for var in ("FEEDLOT_MOTO_PORT", "FEEDLOT_LAMBDA_PORT", "FEEDLOT_INGEST_API_PORT"):
        assert not port_open(ports[var]), var
    assert not (state / "postgres" / "data" / "postmaster.pid").exists()
    assert not port_open(ports["FEEDLOT_PG_PORT"])
    assert [p.name for p in (state / "run").glob("*.json")] in ([], ["postgres.json"])
    assert _our_processes(state) == []
    assert not (state / "env").exists()
    assert all(s.state != "stopped" for s in stack.down(state))  # nothing left to stop


def test_down_stops_what_an_interrupted_up_left(
    tmp_path: Path, clean_env: None, ports: dict[str, int]
) -> None:
    """An `up` killed right after starting moto: the record written at once lets `down` stop it."""
    paths = state_paths(tmp_path / "state").prepare()
    moto = components.start_moto(paths, ports["FEEDLOT_MOTO_PORT"])
    assert moto.state == "started" and port_open(ports["FEEDLOT_MOTO_PORT"])
    stopped = {s.name: s.state for s in stack.down(paths.root)}
    assert stopped == {"moto": "stopped"}
    assert not port_open(ports["FEEDLOT_MOTO_PORT"])
    assert not paths.record("moto").exists()


def test_database_names_are_plain_identifiers(
    tmp_path: Path, clean_env: None, ports: dict[str, int], pg_server_url: str, monkeypatch
) -> None:
    for good in ("feedlot", "_x", "Feedlot_2", "a" * 63):
        assert check_database_name(good) == good
    for bad in ('x"; DROP DATABASE postgres; --', "feedlot-prod", "2020", "a" * 64, "", "a\n"):
        with pytest.raises(ServiceError, match="is not allowed"):
            check_database_name(bad)
        with pytest.raises(ServiceError, match="is not allowed"):
            ensure_database(pg_server_url, bad)  # refused before any SQL is built
    # From the operator's URL: one clear line, nothing started.
    bad_url = make_url(pg_server_url).set(database='w"x').render_as_string(hide_password=False)
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", bad_url)
    out = CliRunner().invoke(local, ["up", "--state-dir", str(tmp_path / "state")])
    assert out.exit_code == 1
    assert "database name 'w\"x' (from FEEDLOT_WAREHOUSE_URL) is not allowed" in out.output
    assert not port_open(ports["FEEDLOT_MOTO_PORT"])


def test_dagster_storage_defaults_beside_the_warehouse(tmp_path: Path, empty_pg_url: str) -> None:
    """Only FEEDLOT_WAREHOUSE_URL set: Dagster's storage is <its database>_dagster on that server
    (never a shared database named `dagster`); the URL is derived, so a later `up` derives it
    again rather than taking it for the user's."""
    paths = state_paths(tmp_path / "state").prepare()
    warehouse_db = make_url(empty_pg_url).database
    plan = databases.PgPlan(warehouse_url=empty_pg_url, dagster_url="")
    assert not plan.embedded
    try:
        services, warehouse_url, dagster_url = databases.start_postgres(paths, plan, free_port())
        assert [s.name for s in services] == ["warehouse"]
        assert warehouse_url == empty_pg_url
        parsed = make_url(dagster_url)
        assert parsed.database == f"{warehouse_db}_dagster"
        assert parsed.drivername == "postgresql"  # psycopg2, as dagster-postgres wants
        engine = create_engine(dagster_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == parsed.database
        engine.dispose()
        record = json.loads(paths.record("postgres").read_text())
        assert record["derived"] == {"FEEDLOT_DAGSTER_STORAGE_URL": dagster_url}
        assert stat.S_IMODE(paths.record("postgres").stat().st_mode) == 0o600
    finally:
        admin = create_engine(
            make_url(empty_pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{warehouse_db}_dagster" WITH (FORCE)'))
        admin.dispose()
    too_long = make_url(empty_pg_url).set(database="w" * 60).render_as_string(False)
    with pytest.raises(ServiceError, match="FEEDLOT_DAGSTER_STORAGE_URL"):
        databases.dagster_database(too_long)


def test_default_ports_are_outside_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = [v for v in DEFAULTS if v.endswith("_PORT")]
    for var in variables:
        monkeypatch.delenv(var, raising=False)
    defaults = LocalSettings()
    chosen = [
        defaults.moto_port,
        defaults.pg_port,
        defaults.lambda_port,
        defaults.ingest_api_port,
        defaults.ssm_agent_port,
    ]
    assert chosen == [4566, 15432, 9010, 9020, 9030]
    assert len(variables) == len(chosen)
    assert not [port for port in chosen if port in EPHEMERAL_PORTS]
    assert not [free_port() for _ in range(20) if free_port() in EPHEMERAL_PORTS]


def test_local_tests_never_use_a_default_port() -> None:
    """A developer's `make dev` may hold every default port while the tests run."""
    settings = LocalSettings()
    chosen = {
        settings.moto_port,
        settings.pg_port,
        settings.lambda_port,
        settings.ingest_api_port,
        settings.ssm_agent_port,
    }
    assert len(chosen) == 5
    assert not chosen & {int(v) for k, v in DEFAULTS.items() if k.endswith("_PORT")}


_CODE_SERVER = (
    "import signal, sys, time\n"
    "if sys.argv[1:2] == ['api']:\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as an orphaned `dagster api grpc` does\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def _fake_dagster(home: Path, *args: str) -> subprocess.Popen:
    """A process named like a Dagster code server, with ``home`` as its DAGSTER_HOME."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CODE_SERVER, *args],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # outside any group `down` knows of, like the real orphans
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_down_stops_dagster_processes_a_killed_dev_left(tmp_path: Path, clean_env: None) -> None:
    """A SIGKILLed `feedlot dev` leaves its code servers running (one ignores SIGTERM): `down`
    stops every Dagster process of this stack's DAGSTER_HOME, and none of another stack's."""
    paths = state_paths(tmp_path / "state").prepare()
    other = state_paths(tmp_path / "other").prepare()
    server = _fake_dagster(paths.dagster_home, "dagster", "code-server", "start")
    grpc = _fake_dagster(paths.dagster_home, "api", "grpc", "dagster")
    foreign = _fake_dagster(other.dagster_home, "dagster", "code-server", "start")
    try:
        stopped = {s.name: s for s in stack.down(paths.root)}
        assert stopped["dagster"].state == "stopped"
        assert set(stopped["dagster"].detail.split(", ")) == {str(server.pid), str(grpc.pid)}
        # Both gone, the one that ignores SIGTERM too (down reaps them: wait() has no status).
        for proc in (server, grpc):
            proc.wait(10)
            assert not psutil.pid_exists(proc.pid)
        assert foreign.poll() is None  # another stack's Dagster is not ours to stop
        assert "dagster" not in {s.name for s in stack.down(paths.root)}  # nothing left
    finally:
        for proc in (server, grpc, foreign):
            proc.kill()
            proc.wait(10)
