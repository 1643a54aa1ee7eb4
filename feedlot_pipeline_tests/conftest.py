"""Fixtures: the real local stand-ins (moto server, PostgreSQL) that the platform itself uses.

- AWS: one moto server per test session on a free loopback port; boto3 reaches it through
  ``AWS_ENDPOINT_URL``. Each test that asks for ``aws`` gets its own uniquely named buckets,
  topic and queues, so tests never see each other's messages.
- PostgreSQL: ``FEEDLOT_TEST_DATABASE_URL`` (a server URL, driver named) when set, else an
  embedded PostgreSQL started for the session. Each test asking for ``warehouse_url`` gets a fresh
  database with the migrations applied.
- MySQL/MariaDB: ``FEEDLOT_TEST_MYSQL_URL`` when set, else the usual local server
  (``LOCAL_MYSQL_URL``) when it answers; tests needing it skip otherwise (``none`` turns it off).
- At the end of the session, skipped tests are counted by reason in a loud section of their own,
  so a run that left tests out never looks like a full one.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.local.services import EmbeddedPostgres, free_port, start_moto
from feedlot_pipeline_tests.helpers import (
    STACK_VARS,
    WorkerStack,
    free_ports,
    start_agent,
    stop_agent,
)


def user_stack_variables(environ: Mapping[str, str]) -> list[str]:
    """What `feedlot local env` (a developer's `make dev` shell) may have exported: the stack's
    endpoints, URLs, state folder and DAGSTER_HOME. FEEDLOT_TEST_* are the tests' own."""
    return [
        var
        for var in environ
        if (var.startswith("FEEDLOT_") and not var.startswith("FEEDLOT_TEST_"))
        or var.startswith("AWS_ENDPOINT_URL")
        or var == "DAGSTER_HOME"
    ]


def pytest_configure(config: pytest.Config) -> None:
    """No test meets a developer's running stack through the shell it was started from: its
    variables are dropped before any test (or xdist worker) starts."""
    for var in user_stack_variables(os.environ):
        del os.environ[var]


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = start_moto(port, log)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS_TEST_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS_TEST_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    proc.terminate()
    try:
        proc.wait(30)  # a loaded machine (load average 30 seen) can take more than 10 s
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """Fresh provisioned resources with unique names for one test: (Settings, Provisioned)."""
    from feedlot_pipeline.local.provision import provision

    tag = uuid.uuid4().hex[:8]
    for var, base in [
        ("FEEDLOT_LANDING_BUCKET", "landing"),
        ("FEEDLOT_LAKE_BUCKET", "lake"),
        ("FEEDLOT_PROCESSED_BUCKET", "processed"),
        ("FEEDLOT_RECORDS_TOPIC", "records"),
        ("FEEDLOT_SENSOR_QUEUE", "sensor"),
        ("FEEDLOT_SENSOR_DLQ", "sensor-dlq"),
        ("FEEDLOT_FILE_DROPS_TOPIC", "drops"),
        ("FEEDLOT_LARGE_FILE_QUEUE", "large"),
        ("FEEDLOT_LARGE_FILE_DLQ", "large-dlq"),
        ("FEEDLOT_FIREHOSE_STREAM", "firehose"),
        ("FEEDLOT_FAILURE_TOPIC", "failures"),
        ("FEEDLOT_FAILURES_INBOX", "failures-inbox"),
        ("FEEDLOT_RECORDS_INBOX", "records-inbox"),
        ("FEEDLOT_RECORDS_INBOX_DLQ", "records-inbox-dlq"),
    ]:
        monkeypatch.setenv(var, f"t{tag}-{base}")
    settings = Settings()
    yield settings, provision(settings)
    # moto keeps an account's quota of 50 Firehose streams: free this test's one.
    client("firehose").delete_delivery_stream(
        DeliveryStreamName=settings.firehose_stream, AllowForceDelete=True
    )


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("FEEDLOT_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")) / "data", free_port())
    server.start()
    yield server.url
    server.stop()


def _new_pg_database(server_url: str) -> str:
    from feedlot_pipeline.local.services import ensure_database

    return ensure_database(server_url, f"feedlot_t_{uuid.uuid4().hex[:12]}")


def _drop_pg_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def empty_pg_url(pg_server_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (no migrations)."""
    url = _new_pg_database(pg_server_url)
    yield url
    _drop_pg_database(url)


@pytest.fixture()
def warehouse_url(empty_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh migrated PostgreSQL warehouse, also exported as FEEDLOT_WAREHOUSE_URL."""
    from feedlot_pipeline.warehouse.schema import upgrade

    upgrade(empty_pg_url)
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", empty_pg_url)
    return empty_pg_url


LOCAL_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
MYSQL_HOW = (
    "to run them: a MySQL/MariaDB at 127.0.0.1:3306 (user root, no password, database `test`), "
    "or FEEDLOT_TEST_MYSQL_URL=mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
)
_MYSQL_SKIP: list[str] = []  # why this process has no MySQL server, for the skip message


@pytest.fixture(scope="session")
def mysql_server_url() -> str | None:
    """FEEDLOT_TEST_MYSQL_URL, else the usual local server if it answers (so `make test` runs
    what CI runs wherever a MariaDB is at hand), else None with the reason in ``_MYSQL_SKIP``."""
    configured = os.environ.get("FEEDLOT_TEST_MYSQL_URL", "")
    if configured.lower() == "none":
        _MYSQL_SKIP.append("MySQL tests turned off (FEEDLOT_TEST_MYSQL_URL=none)")
        return None
    if configured:
        return configured
    engine = create_engine(LOCAL_MYSQL_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any failure means: no local server to use
        _MYSQL_SKIP.append(
            f"no MySQL/MariaDB: FEEDLOT_TEST_MYSQL_URL unset and {LOCAL_MYSQL_URL} does not "
            f"answer ({type(err).__name__})"
        )
        return None
    finally:
        engine.dispose()
    return LOCAL_MYSQL_URL


@pytest.fixture()
def mysql_url(mysql_server_url: str | None) -> Iterator[str]:
    """A fresh MySQL/MariaDB database on the test MySQL server, or skip."""
    if not mysql_server_url:
        pytest.skip(_MYSQL_SKIP[-1] if _MYSQL_SKIP else "no MySQL/MariaDB")
    from sqlalchemy.engine import make_url

    name = f"feedlot_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(mysql_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = make_url(mysql_server_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Say loudly how many tests were skipped, why, and how to run them (also under xdist)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.when in ("setup", "call")]
    if not skipped:
        return
    reasons = Counter(_skip_reason(r) for r in skipped)
    terminalreporter.section(f"{len(skipped)} TESTS SKIPPED", sep="!", yellow=True, bold=True)
    for reason, count in reasons.most_common():
        terminalreporter.line(f"{count:5d}  {reason}", yellow=True, bold=True)
    if any("MySQL" in reason for reason in reasons):
        terminalreporter.line(MYSQL_HOW, bold=True)


# --- fixtures shared across test folders ---


# from core.test_failures
@pytest.fixture()
def failures_aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request):
    """``aws`` with a failure topic and inbox of this test's own (no other test's documents)."""
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("FEEDLOT_FAILURE_TOPIC", f"t{tag}-failures")
    monkeypatch.setenv("FEEDLOT_FAILURES_INBOX", f"t{tag}-failures-inbox")
    return request.getfixturevalue("aws")


# from ingestion.test_sensor
@pytest.fixture()
def instance():
    with dg.instance_for_test() as inst:
        yield inst


# from local.test_stack
@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    chosen = free_ports()
    for var, port in chosen.items():
        monkeypatch.setenv(var, str(port))
    return chosen


# from local.test_stack
@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in STACK_VARS:
        monkeypatch.delenv(var, raising=False)


# from worker/conftest.py
@pytest.fixture(scope="session")
def worker_stack(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerStack]:
    from feedlot_pipeline.local.ssm_agent import register_worker_instance

    tag_value = f"feedlot-worker-{uuid.uuid4().hex[:8]}"
    worker = register_worker_instance("Role", tag_value, "Backup", "true")
    state_dir = tmp_path_factory.mktemp("ssm_state")
    log = state_dir / "ssm_agent.log"
    port = free_port()
    proc = start_agent(worker.instance_id, state_dir, port, log)
    stack = WorkerStack(
        instance_id=worker.instance_id,
        volume_id=worker.volume_id,
        tag_key="Role",
        tag_value=tag_value,
        endpoint=f"http://127.0.0.1:{port}",
        state_dir=state_dir,
        workdir=state_dir / "ebs",
        log=log,
        pid=proc.pid,
    )
    yield stack
    stop_agent(proc)


@pytest.fixture()
def ssm_worker(worker_stack: WorkerStack, monkeypatch: pytest.MonkeyPatch) -> WorkerStack:
    """The worker stack, with this process's SSM calls going through the agent's endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", worker_stack.endpoint)
    return worker_stack


# from core.test_metrics (and observability/, lambdas/): metrics of this test's own
@pytest.fixture()
def metrics_ns(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A CloudWatch namespace of this test's own on the moto server (exported as
    FEEDLOT_METRICS_NAMESPACE), so no other test's metrics are read back."""
    namespace = f"Feedlot-t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FEEDLOT_METRICS_NAMESPACE", namespace)
    return namespace
