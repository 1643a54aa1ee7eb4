"""Secrets Manager rotation for the platform's PostgreSQL logins (alternating users).

The platform reads a database URL from a secret: FEEDLOT_WAREHOUSE_URL from the warehouse
secret's ``url`` key (ECS task secrets, the Lambdas and the EC2 worker through
FEEDLOT_WAREHOUSE_SECRET), FEEDLOT_DAGSTER_STORAGE_URL from the Dagster storage secret's. AWS's
hosted rotation functions change ``password`` but copy every other key, so ``url`` would keep
the old password. This function rotates both together, with the alternating-users strategy:

- each secret names a database ``dbname`` owned by a NOLOGIN role ``owner``, and two logins
  ``<owner>_a`` / ``<owner>_b``, members of ``owner`` whose sessions run as ``owner``
  (``ALTER ROLE … SET role``), so whichever login created a table, ``owner`` owns it;
- a rotation gives the login *not* in use a new password and makes it current; the previous
  login keeps working until the next rotation, so long-running ECS services that read the URL
  at start-up keep connecting until they are redeployed (within one rotation period);
- passwords reach PostgreSQL only as SCRAM-SHA-256 verifiers computed here, so the plain
  password never appears in a statement the server could log;
- the first rotation (CloudFormation starts one when the schedule is created) also creates the
  owner role, the login and the database: no manual SQL after the stack.

Secret JSON (database.yaml creates it; host and port from the instance):
``engine, host, port, dbname, owner, username, password, driver, sslmode, masterarn`` and,
after the first rotation, ``url`` = ``<driver>://<username>:<password>@<host>:<port>/<dbname>
?sslmode=<sslmode>``. ``masterarn`` is the RDS-managed master user secret (RDS rotates it
itself); the function reads it at each rotation to create or alter the logins.

Deployed as ``feedlot_secret_rotation.handler`` from the same zip as the ingest Lambdas (the
file is copied to the zip's root; it needs only boto3 and psycopg). Its four steps are the
Secrets Manager rotation contract: createSecret, setSecret, testSecret, finishSecret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from typing import Any
from urllib.parse import quote

import boto3
import psycopg
from psycopg import sql

logger = logging.getLogger()
logger.setLevel(logging.INFO)

PASSWORD_LENGTH = 40
SCRAM_ITERATIONS = 4096
REQUIRED_KEYS = ("host", "port", "dbname", "owner", "username", "driver", "masterarn")


class RotationError(RuntimeError):
    """The secret or the rotation request is not in a state this function can rotate."""


def _client() -> Any:
    # boto3 honours AWS_ENDPOINT_URL (tests: moto); in the VPC, the Secrets Manager endpoint.
    return boto3.client("secretsmanager")


# --- secret values ------------------------------------------------------------------------------


def _get(sm: Any, arn: str, stage: str, token: str | None = None) -> dict:
    kwargs: dict[str, Any] = {"SecretId": arn, "VersionStage": stage}
    if token:
        kwargs["VersionId"] = token
    value = json.loads(sm.get_secret_value(**kwargs)["SecretString"])
    missing = [k for k in REQUIRED_KEYS if k not in value]
    if missing:
        raise RotationError(f"secret {arn} ({stage}) lacks {missing}")
    return value


def logins(owner: str) -> tuple[str, str]:
    """The two logins that take turns for ``owner``."""
    return f"{owner}_a", f"{owner}_b"


def other_login(secret: dict) -> str:
    first, second = logins(secret["owner"])
    return second if secret["username"] == first else first


def database_url(secret: dict) -> str:
    """The SQLAlchemy URL the platform reads (FEEDLOT_WAREHOUSE_URL / _DAGSTER_STORAGE_URL)."""
    user = quote(secret["username"], safe="")
    password = quote(secret["password"], safe="")
    query = f"?sslmode={secret['sslmode']}" if secret.get("sslmode") else ""
    return (
        f"{secret['driver']}://{user}:{password}@{secret['host']}:{int(secret['port'])}/"
        f"{secret['dbname']}{query}"
    )


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``rolpassword`` stores).

    PostgreSQL stores a pre-hashed password given to CREATE/ALTER ROLE as it is, so the plain
    text never travels in a statement. Passwords here are ASCII letters and digits, which
    SASLprep leaves unchanged.
    """
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _connect(secret: dict, user: str, password: str, dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=secret["host"],
        port=int(secret["port"]),
        dbname=dbname,
        user=user,
        password=password,
        sslmode=secret.get("sslmode") or "require",
        connect_timeout=10,
        autocommit=True,
    )


# --- the four steps -----------------------------------------------------------------------------


def create_secret(sm: Any, arn: str, token: str) -> None:
    """AWSPENDING = the current value with the other login, a new password and its URL."""
    current = _get(sm, arn, "AWSCURRENT")
    try:
        _get(sm, arn, "AWSPENDING", token)
        logger.info("createSecret: pending version %s exists", token)
        return
    except sm.exceptions.ResourceNotFoundException:
        pass
    pending = dict(current)
    pending["username"] = other_login(current)
    pending["password"] = sm.get_random_password(
        PasswordLength=PASSWORD_LENGTH, ExcludePunctuation=True
    )["RandomPassword"]
    pending["url"] = database_url(pending)
    sm.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=json.dumps(pending),
        VersionStages=["AWSPENDING"],
    )
    logger.info("createSecret: pending version %s for login %s", token, pending["username"])


def set_secret(sm: Any, arn: str, token: str) -> None:
    """Create or alter the pending login (and, the first time, the owner and the database)."""
    pending = _get(sm, arn, "AWSPENDING", token)
    master = json.loads(sm.get_secret_value(SecretId=pending["masterarn"])["SecretString"])
    owner, login, dbname = pending["owner"], pending["username"], pending["dbname"]
    if login not in logins(owner):
        raise RotationError(f"login {login!r} is not one of {logins(owner)}")
    verifier = sql.Literal(scram_verifier(pending["password"]))
    with _connect(pending, master["username"], master["password"], "postgres") as conn:
        exists = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([owner, login],)
        ).fetchall()
        have = {row[0] for row in exists}
        if owner not in have:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
        # On RDS the master user is not a superuser: it must be a member of the owner role to
        # create a database owned by it (it has ADMIN on roles it created).
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(owner)))
        if login in have:
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(login), verifier
                )
            )
        else:
            conn.execute(
                sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(login), verifier
                )
            )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(login)))
        # Sessions of either login act as the owner: tables they create belong to the owner, so
        # the other login (next rotation) can use them.
        conn.execute(
            sql.SQL("ALTER ROLE {} SET role = {}").format(sql.Identifier(login), sql.Literal(owner))
        )
        has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not has_db:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner)
                )
            )
        # Only the owner's logins connect to this database (not the other database's logins).
        conn.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname))
        )
    logger.info("setSecret: login %s ready on %s", login, dbname)


def test_secret(sm: Any, arn: str, token: str) -> None:
    """The pending login connects to its database and acts as the owner."""
    pending = _get(sm, arn, "AWSPENDING", token)
    with _connect(pending, pending["username"], pending["password"], pending["dbname"]) as conn:
        current_user, session_user = conn.execute("SELECT current_user, session_user").fetchone()
    if session_user != pending["username"] or current_user != pending["owner"]:
        raise RotationError(
            f"testSecret: session {session_user!r} acts as {current_user!r}, "
            f"expected {pending['username']!r} as {pending['owner']!r}"
        )
    logger.info("testSecret: %s connects as %s", session_user, current_user)


def finish_secret(sm: Any, arn: str, token: str) -> None:
    """Move AWSCURRENT to the pending version (AWSPREVIOUS follows it automatically)."""
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    if current == token:
        logger.info("finishSecret: %s already current", token)
        return
    sm.update_secret_version_stage(
        SecretId=arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=token,
        RemoveFromVersionId=current,
    )
    logger.info("finishSecret: %s is now AWSCURRENT", token)


STEPS = {
    "createSecret": create_secret,
    "setSecret": set_secret,
    "testSecret": test_secret,
    "finishSecret": finish_secret,
}


def handler(event: dict, context: Any = None, sm: Any = None) -> None:
    """Secrets Manager's rotation call: ``{SecretId, ClientRequestToken, Step}``."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step not in STEPS:
        raise RotationError(f"unknown step {step!r}")
    sm = sm or _client()
    metadata = sm.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise RotationError(f"secret {arn} does not have rotation enabled")
    versions = metadata.get("VersionIdsToStages", {})
    if token not in versions:
        raise RotationError(f"secret version {token} has no stage for rotation of {arn}")
    if "AWSCURRENT" in versions[token]:
        logger.info("%s: version %s is already current", step, token)
        return
    if "AWSPENDING" not in versions[token]:
        raise RotationError(f"secret version {token} is not AWSPENDING for rotation of {arn}")
    STEPS[step](sm, arn, token)
