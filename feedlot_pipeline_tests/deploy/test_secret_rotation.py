"""deploy/rotation/feedlot_secret_rotation.py against a real PostgreSQL and moto's Secrets Manager.

The server is an embedded PostgreSQL of its own that, unlike the suite's shared one (trust
authentication), requires SCRAM-SHA-256 passwords for every user but the superuser standing in
for RDS's master user, and logs every statement: so a login that works proves the verifier the
function computed, a wrong password is really refused, and the server log shows whether a plain
password ever reached the server.

moto has no rotation Lambda runner here (it would need Docker), so ``RotatingSecretsManager``
plays the two pieces of state Secrets Manager's RotateSecret creates before it calls the
function (the pending version id with stage AWSPENDING and RotationEnabled); every other call
is moto's.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.local.services import EmbeddedPostgres, free_port
from feedlot_pipeline_tests.deploy.cfn import REPO

SUPERUSER = "postgres"


def _rotation_module() -> ModuleType:
    path = REPO / "deploy" / "rotation" / "feedlot_secret_rotation.py"
    spec = importlib.util.spec_from_file_location("feedlot_secret_rotation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rotation = _rotation_module()


class RotatingSecretsManager:
    """moto's client, plus the pending version RotateSecret registers before invoking."""

    def __init__(self, sm: Any) -> None:
        self._sm = sm
        self.exceptions = sm.exceptions
        self.pending: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sm, name)

    def describe_secret(self, **kwargs: Any) -> dict:
        meta = self._sm.describe_secret(**kwargs)
        meta["RotationEnabled"] = True
        stages = meta.setdefault("VersionIdsToStages", {})
        if self.pending and self.pending not in stages:
            stages[self.pending] = ["AWSPENDING"]
        return meta

    def rotate(self, arn: str) -> str:
        """One rotation, step by step as Secrets Manager drives it; returns the new version."""
        token = str(uuid.uuid4())
        self.pending = token
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            rotation.handler({"SecretId": arn, "ClientRequestToken": token, "Step": step}, sm=self)
        self.pending = None
        return token


@pytest.fixture(scope="module")
def scram_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("scram-pg")
    log = base / "postgres.log"
    server = EmbeddedPostgres(base / "data", free_port(), log_path=log)
    server.start()
    # Password authentication for everyone but the superuser (the stand-in for RDS's master
    # user, whose secret the function reads but whose password this server does not check).
    (server.data_dir / "pg_hba.conf").write_text(
        f"local all {SUPERUSER} trust\n"
        f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    admin = psycopg.connect(
        host="127.0.0.1", port=server.port, user=SUPERUSER, dbname="postgres", autocommit=True
    )
    admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    admin.execute("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
    admin.execute("SELECT pg_reload_conf()")
    yield {"port": server.port, "log": log, "admin": admin}
    admin.close()
    server.stop()


@pytest.fixture()
def sm(moto_endpoint: str) -> RotatingSecretsManager:
    return RotatingSecretsManager(client("secretsmanager"))


def _secrets(sm: RotatingSecretsManager, port: int, owner: str, dbname: str, driver: str) -> str:
    tag = uuid.uuid4().hex[:8]
    master = sm.create_secret(
        Name=f"rds!db-{tag}",
        SecretString=json.dumps({"username": SUPERUSER, "password": "checked-by-rds-only"}),
    )["ARN"]
    # What database.yaml's GenerateSecretString produces: no url until the first rotation.
    initial = {
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "dbname": dbname,
        "owner": owner,
        "username": f"{owner}_a",
        "driver": driver,
        "sslmode": "disable",
        "masterarn": master,
        "password": "generated-by-cloudformation",
    }
    return sm.create_secret(Name=f"feedlot/t{tag}/{dbname}", SecretString=json.dumps(initial))[
        "ARN"
    ]


def _current(sm: RotatingSecretsManager, arn: str) -> dict:
    # The stage named: moto 5.2.5's GetSecretValue without one returns the version the secret
    # was created or last put with, not the one UpdateSecretVersionStage made AWSCURRENT.
    value = sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
    return json.loads(value["SecretString"])


def _connects(secret: dict, password: str | None = None, dbname: str | None = None) -> bool:
    try:
        with psycopg.connect(
            host=secret["host"],
            port=secret["port"],
            user=secret["username"],
            password=password if password is not None else secret["password"],
            dbname=dbname or secret["dbname"],
            connect_timeout=5,
        ):
            return True
    except psycopg.OperationalError:
        return False


def test_first_rotation_creates_owner_login_and_database_and_writes_the_url(
    sm: RotatingSecretsManager, scram_pg: dict
) -> None:
    owner = f"wh_{uuid.uuid4().hex[:6]}"
    dbname = f"{owner}_db"
    arn = _secrets(sm, scram_pg["port"], owner, dbname, "postgresql+psycopg")
    assert "url" not in _current(sm, arn)

    token = sm.rotate(arn)

    secret = _current(sm, arn)
    stages = sm._sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    assert "AWSCURRENT" in stages[token]
    assert secret["username"] == f"{owner}_b"
    assert secret["url"] == rotation.database_url(secret)
    assert secret["url"].startswith(f"postgresql+psycopg://{owner}_b:")
    # The platform's own way in: SQLAlchemy with the URL from the secret, acting as the owner.
    engine = create_engine(secret["url"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == owner
        assert conn.execute(text("SELECT current_database()")).scalar() == dbname
    engine.dispose()
    # Password authentication is real: a wrong password is refused.
    assert not _connects(secret, password="wrong")
    admin = scram_pg["admin"]
    owner_of = admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,)
    ).fetchone()[0]
    assert owner_of == owner


def test_alternating_logins_keep_the_previous_credentials_for_one_period(
    sm: RotatingSecretsManager, scram_pg: dict
) -> None:
    from feedlot_pipeline.warehouse.schema import upgrade

    owner = f"wh_{uuid.uuid4().hex[:6]}"
    arn = _secrets(sm, scram_pg["port"], owner, f"{owner}_db", "postgresql+psycopg")
    sm.rotate(arn)
    first = _current(sm, arn)  # login _b
    # The warehouse migrations run with the rotated URL; the tables belong to the owner role.
    upgrade(first["url"])

    sm.rotate(arn)
    second = _current(sm, arn)  # login _a, new password
    assert second["username"] == f"{owner}_a" and second["password"] != first["password"]
    # Services started with the previous secret still connect until the next rotation ...
    assert _connects(first) and _connects(second)
    # ... and both logins see the same tables, owned by the owner role, not by a login.
    engine = create_engine(second["url"])
    with engine.connect() as conn:
        owners = set(
            conn.execute(
                text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        assert owners == {owner}
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == 0
    engine.dispose()

    sm.rotate(arn)
    third = _current(sm, arn)  # login _b again, with a new password
    assert third["username"] == first["username"] and third["password"] != first["password"]
    assert _connects(third) and _connects(second)
    assert not _connects(first)  # the password of two rotations ago is gone


def test_plain_passwords_never_reach_the_server(sm: RotatingSecretsManager, scram_pg: dict) -> None:
    owner = f"wh_{uuid.uuid4().hex[:6]}"
    arn = _secrets(sm, scram_pg["port"], owner, f"{owner}_db", "postgresql+psycopg")
    sm.rotate(arn)
    sm.rotate(arn)
    log = scram_pg["log"].read_text(errors="replace")
    assert f'ALTER ROLE "{owner}_a"' in log or f'CREATE ROLE "{owner}_a"' in log
    assert "SCRAM-SHA-256$4096:" in log  # what the server did receive
    versions = sm._sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]
    for version in versions:
        value = json.loads(
            sm._sm.get_secret_value(SecretId=arn, VersionId=version["VersionId"])["SecretString"]
        )
        assert value["password"] not in log


def test_two_databases_are_isolated(sm: RotatingSecretsManager, scram_pg: dict) -> None:
    # The warehouse and Dagster storage share the instance; each login reaches its own only.
    wh_owner = f"wh_{uuid.uuid4().hex[:6]}"
    dg_owner = f"dg_{uuid.uuid4().hex[:6]}"
    warehouse = _secrets(sm, scram_pg["port"], wh_owner, f"{wh_owner}_db", "postgresql+psycopg")
    storage = _secrets(sm, scram_pg["port"], dg_owner, f"{dg_owner}_db", "postgresql")
    sm.rotate(warehouse)
    sm.rotate(storage)
    wh, dg = _current(sm, warehouse), _current(sm, storage)
    assert dg["url"].startswith(f"postgresql://{dg_owner}_b:")
    # dagster-postgres connects with psycopg2 through SQLAlchemy, as in dagster.yaml.
    engine = create_engine(dg["url"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == dg_owner
    engine.dispose()
    assert not _connects(dg, dbname=wh["dbname"])
    assert not _connects(wh, dbname=dg["dbname"])


def test_steps_are_idempotent_and_refuse_foreign_versions(
    sm: RotatingSecretsManager, scram_pg: dict
) -> None:
    owner = f"wh_{uuid.uuid4().hex[:6]}"
    arn = _secrets(sm, scram_pg["port"], owner, f"{owner}_db", "postgresql+psycopg")
    token = str(uuid.uuid4())
    sm.pending = token
    event = {"SecretId": arn, "ClientRequestToken": token}
    rotation.handler({**event, "Step": "createSecret"}, sm=sm)
    pending = sm.get_secret_value(SecretId=arn, VersionId=token)["SecretString"]
    # A retried createSecret (Secrets Manager retries failed steps) keeps the same password.
    rotation.handler({**event, "Step": "createSecret"}, sm=sm)
    assert sm.get_secret_value(SecretId=arn, VersionId=token)["SecretString"] == pending
    for step in ("setSecret", "setSecret", "testSecret", "finishSecret"):
        rotation.handler({**event, "Step": step}, sm=sm)
    sm.pending = None
    # Every step on a version that is already current does nothing.
    rotation.handler({**event, "Step": "finishSecret"}, sm=sm)
    assert _current(sm, arn)["url"] == json.loads(pending)["url"]
    with pytest.raises(rotation.RotationError, match="no stage"):
        rotation.handler(
            {**event, "ClientRequestToken": str(uuid.uuid4()), "Step": "setSecret"}, sm=sm
        )
    with pytest.raises(rotation.RotationError, match="unknown step"):
        rotation.handler({**event, "Step": "dropDatabase"}, sm=sm)


def test_scram_verifier_equals_postgresqls_own(scram_pg: dict) -> None:
    # PostgreSQL hashes a plain password itself (random salt); the function's verifier for the
    # same password and salt must be byte-for-byte the server's.
    import base64

    admin = scram_pg["admin"]
    role = f"v_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'Pencil42pencil'")
    stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
    (verifier,) = stored.fetchone()
    admin.execute(f"DROP ROLE {role}")
    salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
    assert rotation.scram_verifier("Pencil42pencil", salt) == verifier


def test_rotation_module_is_packaged_beside_the_handlers() -> None:
    # database.yaml's handler name is the module's file name at the zip's root.
    assert Path(rotation.__file__).name == "feedlot_secret_rotation.py"
    assert callable(rotation.handler)
