"""Fixtures: the real local stand-ins (moto server, PostgreSQL) that the platform itself uses.

- AWS: one moto server per test session on a free loopback port; boto3 reaches it through
  ``AWS_ENDPOINT_URL``. Each test that asks for ``aws`` gets its own uniquely named buckets,
  topic and queues, so tests never see each other's messages.
- PostgreSQL: ``FEEDLOT_TEST_DATABASE_URL`` (a server URL, driver named) when set, else an
  embedded PostgreSQL started for the session. Each test asking for ``warehouse_url`` gets a fresh
  database with the migrations applied.
- MySQL/MariaDB: ``FEEDLOT_TEST_MYSQL_URL`` when set; tests needing it skip otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedlot_pipeline.aws import client
from feedlot_pipeline.local.services import EmbeddedPostgres, free_port, start_moto
from feedlot_pipeline.settings import Settings
from feedlot_pipeline.settings import env as settings_env

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
    ]:
        monkeypatch.setenv(var, f"t{tag}-{base}")
    settings = Settings()
    yield settings, provision(settings)
    # moto keeps an account's quota of 50 Firehose streams: free this test's one.
    client("firehose").delete_delivery_stream(
        DeliveryStreamName=settings_env("FEEDLOT_FIREHOSE_STREAM"), AllowForceDelete=True
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
    from sqlalchemy import create_engine, text
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


@pytest.fixture()
def mysql_url() -> Iterator[str]:
    """A fresh MySQL/MariaDB database on FEEDLOT_TEST_MYSQL_URL's server, or skip."""
    server = os.environ.get("FEEDLOT_TEST_MYSQL_URL")
    if not server:
        pytest.skip("FEEDLOT_TEST_MYSQL_URL not set")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"feedlot_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()
