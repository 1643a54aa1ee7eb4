"""The local stack behind ``feedlot local up|down|status|env`` (and ``feedlot demo``).

What the cloud provides, on loopback: a moto server (provisioned like AWS), a PostgreSQL (the one
``FEEDLOT_WAREHOUSE_URL`` names, else an embedded one) holding the warehouse and Dagster's storage,
and the Lambda bridge that moto's SNS delivers to. Everything lives under one state folder
(default ``./.feedlot``): pid records, logs, the ``env`` file, PostgreSQL's data, Lambda failures.

``up`` is idempotent: parts already running are reused, so it is also the "make sure" call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedlot_pipeline.local.services import (
    LOOPBACK,
    EmbeddedPostgres,
    ServiceError,
    ensure_database,
    environ,
    port_open,
    start_moto,
    wait_for_port,
)

STACK_DEFAULTS: dict[str, str] = {
    "FEEDLOT_STATE_DIR": ".feedlot",
    "FEEDLOT_MOTO_PORT": "4566",
    "FEEDLOT_PG_PORT": "54329",
    "FEEDLOT_LAMBDA_PORT": "9010",
    "FEEDLOT_INGEST_API_PORT": "9020",
    "FEEDLOT_SSM_AGENT_PORT": "9030",
}
# Dummy credentials: moto accepts any; exporting them keeps real ones from being sent to it.
LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
WAREHOUSE_DB = "feedlot"
DAGSTER_DB = "dagster"
MOTO_MARKER = "moto.server"
BRIDGE_MARKER = "feedlot_pipeline.local.lambda_bridge"
BRIDGE_PATH = "/sns"
BRIDGE_S3_PATH = "/s3"  # file drops: S3 → SNS feedlot-file-drops → bridge → lambdas.s3_handler
API_MARKER = "feedlot_pipeline.local.api_gateway"
SSM_AGENT_MARKER = "feedlot_pipeline.local.ssm_agent"

# Used only when neither the working directory nor the source checkout has a dagster.yaml.
FALLBACK_DAGSTER_YAML = """\
storage:
  postgres:
    postgres_url:
      env: FEEDLOT_DAGSTER_STORAGE_URL
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


def _setting(name: str) -> str:
    return os.environ.get(name) or STACK_DEFAULTS[name]


def _port(name: str) -> int:
    value = _setting(name)
    try:
        port = int(value)
    except ValueError:
        raise ServiceError(f"{name}={value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServiceError(f"{name}={port} is not a port number")
    return port


def default_state_dir() -> Path:
    return Path(_setting("FEEDLOT_STATE_DIR"))


@dataclass(frozen=True)
class ServiceInfo:
    """One part of the stack: where it listens and whether it is alive."""

    name: str
    address: str
    pid: int | None
    alive: bool
    state: str  # started | reused | external | running | down | stopped | not running
    log: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class StackInfo:
    state_dir: Path
    services: list[ServiceInfo]
    env: dict[str, str]
    topic_arn: str = ""
    subscription_arn: str = ""
    bridge_endpoint: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return bool(self.services) and all(s.alive for s in self.services)


@dataclass(frozen=True)
class _Paths:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def record(self, name: str) -> Path:
        return self.run / f"{name}.json"


def _paths(state_dir: Path | str) -> _Paths:
    return _Paths(Path(state_dir).expanduser().resolve())


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def _ours(pid: int | None, marker: str) -> bool:
    """Is ``pid`` alive and the process we started (not a recycled pid)?"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    return True


def _port_taken(port: int, variable: str, what: str) -> ServiceError:
    return ServiceError(
        f"port {port} (for the {what}) is already in use by another program; "
        f"stop it or set {variable} to a free port"
    )


# --- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PgPlan:
    """Which URLs the user configured; an empty one is derived from the (embedded) server."""

    warehouse_url: str
    dagster_url: str

    @property
    def embedded(self) -> bool:
        """An embedded server is needed for the warehouse, or for a non-PostgreSQL one's Dagster."""
        if not self.warehouse_url:
            return True
        return not self.dagster_url and not self.warehouse_url.startswith("postgresql")


def _pg_plan(paths: _Paths) -> _PgPlan:
    """Configured URLs, ignoring the ones this stack derived itself last time.

    A shell that evaluated ``feedlot local env`` carries our own URLs; they must not turn the
    embedded server into an "external" one that is not running after ``down``.
    """
    derived = (_read_record(paths.record("postgres")) or {}).get("derived", {})
    urls = {}
    for var in ("FEEDLOT_WAREHOUSE_URL", "FEEDLOT_DAGSTER_STORAGE_URL"):
        value = os.environ.get(var, "")
        urls[var] = "" if value and value == derived.get(var) else value
    return _PgPlan(urls["FEEDLOT_WAREHOUSE_URL"], urls["FEEDLOT_DAGSTER_STORAGE_URL"])


def _check_answers(url: str, variable: str, create_missing: bool = True) -> None:
    """Connect once (5 s timeout); a missing PostgreSQL database is created, else a clear error."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    try:
        parsed = make_url(url)
        engine = create_engine(parsed, connect_args={"connect_timeout": 5})
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        raise ServiceError(f"{variable} is not a usable SQLAlchemy URL: {err}") from None
    where = f"{parsed.host or 'localhost'}:{parsed.port or ''}".rstrip(":")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return
    except OperationalError as err:
        lines = str(err.orig or err).strip().splitlines()
        message = lines[0] if lines else type(err).__name__
        missing = "does not exist" in message and parsed.get_backend_name() == "postgresql"
        if not (missing and create_missing):
            raise ServiceError(
                f"{variable} server {where} does not answer ({message}); start it, fix the URL, "
                f"or unset {variable} to use an embedded PostgreSQL"
            ) from None
    finally:
        engine.dispose()
    _ensure_database(url, parsed.database or WAREHOUSE_DB, variable)


def _ensure_database(server_url: str, name: str, variable: str) -> str:
    """``ensure_database`` with an error that says what to set when it cannot create one."""
    try:
        return ensure_database(server_url, name)
    except Exception as err:  # noqa: BLE001 - driver errors vary; the message is what matters
        lines = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ServiceError(
            f"cannot create database {name!r} on the server of {variable}: "
            f"{lines[0] if lines else type(err).__name__}; create it or set {variable}"
        ) from None


def _start_postgres(
    paths: _Paths, plan: _PgPlan, pg_port: int
) -> tuple[list[ServiceInfo], str, str]:
    """Check or start the PostgreSQL(s); return their info, the warehouse and Dagster URLs."""
    from sqlalchemy.engine import make_url

    services: list[ServiceInfo] = []
    warehouse_url, dagster_url = plan.warehouse_url, plan.dagster_url
    if warehouse_url:
        _check_answers(warehouse_url, "FEEDLOT_WAREHOUSE_URL")
        parsed = make_url(warehouse_url)
        address = f"{parsed.host}:{parsed.port or ''}".rstrip(":")
        shown = parsed.render_as_string(hide_password=True)
        services.append(ServiceInfo("warehouse", address, None, True, "external", None, shown))
    derived: dict[str, str] = {}
    if dagster_url:
        _check_answers(dagster_url, "FEEDLOT_DAGSTER_STORAGE_URL")
    elif warehouse_url and not plan.embedded:  # a PostgreSQL warehouse also holds Dagster's
        created = _ensure_database(warehouse_url, DAGSTER_DB, "FEEDLOT_DAGSTER_STORAGE_URL")
        dagster_url = _psycopg2_url(created)
        derived["FEEDLOT_DAGSTER_STORAGE_URL"] = dagster_url

    record: dict = {"mode": "external"}
    if plan.embedded:
        log = paths.logs / "postgres.log"
        server = EmbeddedPostgres(paths.pg_data, pg_port, log)
        reused = server.running()
        server.start()
        services.append(
            ServiceInfo(
                "postgres",
                f"{LOOPBACK}:{pg_port}",
                server.pid(),
                True,
                "reused" if reused else "started",
                log,
                "embedded",
            )
        )
        record = {
            "mode": "embedded",
            "port": pg_port,
            "data_dir": str(paths.pg_data),
            "log": str(log),
        }
        if not warehouse_url:
            warehouse_url = ensure_database(server.url, WAREHOUSE_DB)
            derived["FEEDLOT_WAREHOUSE_URL"] = warehouse_url
        if not dagster_url:
            dagster_url = _psycopg2_url(ensure_database(server.url, DAGSTER_DB))
            derived["FEEDLOT_DAGSTER_STORAGE_URL"] = dagster_url
    record |= {"warehouse_url": warehouse_url, "dagster_url": dagster_url, "derived": derived}
    _write_record(paths.record("postgres"), record)
    return services, warehouse_url, dagster_url


def _psycopg2_url(url: str) -> str:
    """Dagster's storage uses psycopg2: the plain postgresql:// scheme (SQLAlchemy < 2.1)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _migrate(warehouse_url: str) -> None:
    """Bring the warehouse schema up to date (idempotent; a colleague's Alembic migrations)."""
    from sqlalchemy.engine import make_url

    try:
        from feedlot_pipeline.warehouse.schema import upgrade
    except ImportError as err:
        raise ServiceError(f"warehouse migrations unavailable: {err}") from err
    try:
        upgrade(warehouse_url)
    except Exception as err:  # noqa: BLE001 - one line here; `feedlot db upgrade` shows all
        shown = make_url(warehouse_url).render_as_string(hide_password=True)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ServiceError(
            f"warehouse migrations failed on {shown}: {first} (details: feedlot db upgrade)"
        ) from err


# --- moto and the Lambda bridge ------------------------------------------------------------------


def _start_moto(paths: _Paths, port: int) -> ServiceInfo:
    log = paths.logs / "moto.log"
    record = _read_record(paths.record("moto")) or {}
    if record.get("port") == port and _ours(record.get("pid"), MOTO_MARKER) and port_open(port):
        return ServiceInfo("moto", f"http://{LOOPBACK}:{port}", record["pid"], True, "reused", log)
    if port_open(port):
        raise _port_taken(port, "FEEDLOT_MOTO_PORT", "moto server")
    proc = start_moto(port, log)
    _write_record(
        paths.record("moto"),
        {"pid": proc.pid, "port": port, "log": str(log), "started_at": time.time()},
    )
    return ServiceInfo("moto", f"http://{LOOPBACK}:{port}", proc.pid, True, "started", log)


def service_health(port: int, timeout: float = 1.0) -> dict | None:
    """The JSON of a local service's GET /health (bridge, API gateway, SSM agent), or None."""
    import requests

    try:
        response = requests.get(f"http://{LOOPBACK}:{port}/health", timeout=timeout)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


def env_digest(child_env: dict[str, str]) -> str:
    """What a service record keeps of its environment: a digest (the env holds secrets)."""
    return hashlib.sha256(json.dumps(child_env, sort_keys=True).encode()).hexdigest()


def spawn_service(
    paths: _Paths,
    name: str,
    argv: list[str],
    port: int,
    child_env: dict[str, str],
    port_variable: str,
    what: str,
    **extra: Any,
) -> subprocess.Popen:
    """Start ``python -m argv…`` in its own session, logging to logs/<name>.log; record it.

    The record (pid, port, log, env digest, ``extra``) is how ``up`` reuses and ``down`` stops it.
    Returns once the port answers.
    """
    if port_open(port):
        raise _port_taken(port, port_variable, what)
    log = paths.logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **child_env, "PYTHONUNBUFFERED": "1"},
        )
    record = {"pid": proc.pid, "port": port, "log": str(log), "started_at": time.time()}
    _write_record(paths.record(name), {**record, "env_sha256": env_digest(child_env), **extra})
    wait_for_port(port, 30, proc, what)
    return proc


def _start_bridge(paths: _Paths, port: int, child_env: dict[str, str]) -> ServiceInfo:
    """Reuse a healthy bridge started with the same environment; else (re)start it."""
    log = paths.logs / "lambda_bridge.log"
    address = f"http://{LOOPBACK}:{port}"
    record = _read_record(paths.record("lambda_bridge")) or {}
    state = "started"
    if record.get("port") == port and _ours(record.get("pid"), BRIDGE_MARKER):
        health = service_health(port)
        # A bridge without the /s3 route (older code) would take file drops for SNS records.
        if (
            health
            and health.get("pid") == record["pid"]
            and record.get("env_sha256") == env_digest(child_env)
            and "s3" in health
        ):
            return ServiceInfo(
                "lambda_bridge",
                address,
                record["pid"],
                True,
                "reused",
                log,
                health.get("handler", ""),
            )
        _stop_group(record["pid"])  # stale: it would talk to another moto or warehouse
        state = "restarted"
    argv = [BRIDGE_MARKER, "--host", LOOPBACK, "--port", str(port), "--state-dir", str(paths.root)]
    proc = spawn_service(
        paths, "lambda_bridge", argv, port, child_env, "FEEDLOT_LAMBDA_PORT", "Lambda bridge"
    )
    health = service_health(port, timeout=5) or {}
    return ServiceInfo(
        "lambda_bridge", address, proc.pid, True, state, log, health.get("handler", "")
    )


def _subscribe_bridge(topic_arn: str, endpoint: str, path: str = BRIDGE_PATH) -> str:
    """Subscribe the bridge (idempotent) and drop stale loopback bridge subscriptions.

    moto delivers to http subscriptions inside Publish; one pointing at a dead port would make
    publishing fail, so an old bridge endpoint (another FEEDLOT_LAMBDA_PORT) is removed.
    """
    from feedlot_pipeline.core.aws import client

    sns = client("sns")
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            other = sub.get("Endpoint", "")
            if (
                sub.get("Protocol") == "http"
                and other.startswith(f"http://{LOOPBACK}:")
                and other.endswith(path)
                and other != endpoint
                and sub["SubscriptionArn"].startswith("arn:")
            ):
                sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    return sns.subscribe(
        TopicArn=topic_arn, Protocol="http", Endpoint=endpoint, ReturnSubscriptionArn=True
    )["SubscriptionArn"]


# --- the API Gateway stand-in (POST /consumo → the API Lambda) ------------------------------------


def _api_key(paths: _Paths) -> str:
    """The configured FEEDLOT_INGEST_API_KEY, else the key this stack generated before, else new.

    Never a built-in value: a fresh random key per state folder, kept across ``up``s so shells
    that loaded the env file keep working.
    """
    import secrets

    from feedlot_pipeline.local.api_gateway import MIN_KEY_LENGTH

    configured = os.environ.get("FEEDLOT_INGEST_API_KEY", "")
    if configured:
        if len(configured) < MIN_KEY_LENGTH:
            raise ServiceError(
                f"FEEDLOT_INGEST_API_KEY must be at least {MIN_KEY_LENGTH} characters"
            )
        return configured
    if paths.env_file.exists():
        previous = _parse_env_file(paths.env_file.read_text()).get("FEEDLOT_INGEST_API_KEY", "")
        if len(previous) >= MIN_KEY_LENGTH:
            return previous
    return secrets.token_urlsafe(32)


def _check_api_port_first(paths: _Paths, port: int, others: list[int]) -> None:
    if port in others:
        raise ServiceError("FEEDLOT_INGEST_API_PORT must differ from the stack's other ports")
    record = _read_record(paths.record("api_gateway")) or {}
    ours = record.get("port") == port and _ours(record.get("pid"), API_MARKER)
    if not ours and port_open(port):
        raise _port_taken(port, "FEEDLOT_INGEST_API_PORT", "API gateway")


def _start_api_gateway(paths: _Paths, port: int, child_env: dict[str, str]) -> ServiceInfo:
    """Reuse a healthy gateway started with the same environment; else (re)start it."""
    log = paths.logs / "api_gateway.log"
    address = f"http://{LOOPBACK}:{port}"
    digest = env_digest(child_env)  # the env holds the API key: never stored as such
    record = _read_record(paths.record("api_gateway")) or {}
    state = "started"
    if record.get("port") == port and _ours(record.get("pid"), API_MARKER):
        health = service_health(port)
        if health and health.get("pid") == record["pid"] and record.get("env_sha256") == digest:
            return ServiceInfo(
                "api_gateway", address, record["pid"], True, "reused", log, "POST /consumo"
            )
        _stop_group(record["pid"])  # stale: other key, moto or warehouse
        state = "restarted"
    argv = [API_MARKER, "--host", LOOPBACK, "--port", str(port), "--state-dir", str(paths.root)]
    proc = spawn_service(
        paths, "api_gateway", argv, port, child_env, "FEEDLOT_INGEST_API_PORT", "API gateway"
    )
    return ServiceInfo("api_gateway", address, proc.pid, True, state, log, "POST /consumo")


# --- Dagster home and the env file ---------------------------------------------------------------


def _dagster_yaml() -> str:
    for candidate in (Path.cwd() / "dagster.yaml", Path(__file__).parents[2] / "dagster.yaml"):
        if candidate.is_file():
            return candidate.read_text()
    return FALLBACK_DAGSTER_YAML


def _write_dagster_home(paths: _Paths) -> Path:
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = _dagster_yaml()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return home


def export_lines(env: dict[str, str]) -> str:
    """Shell lines for ``eval "$(feedlot local env)"`` or ``set -a; . .feedlot/env``."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def _write_env(paths: _Paths, env: dict[str, str]) -> None:
    paths.env_file.parent.mkdir(parents=True, exist_ok=True)
    text = '# Written by `feedlot local up`; load with: eval "$(feedlot local env)"\n'
    # URLs may carry passwords: readable by the owner only.
    fd = os.open(paths.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + export_lines(env))
    paths.env_file.chmod(0o600)  # also when an older file existed


def _parse_env_file(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            env[key] = value
    return env


# --- the three verbs -----------------------------------------------------------------------------


def up(state_dir: Path | str | None = None) -> StackInfo:
    """Start (or reuse) moto, PostgreSQL and the Lambda bridge; provision; write the env file."""
    from feedlot_pipeline.core.settings import DEFAULTS, Settings

    started = time.monotonic()
    paths = _paths(state_dir or default_state_dir())
    for folder in (paths.logs, paths.run):
        folder.mkdir(parents=True, exist_ok=True)
    moto_port = _port("FEEDLOT_MOTO_PORT")
    pg_port = _port("FEEDLOT_PG_PORT")
    bridge_port = _port("FEEDLOT_LAMBDA_PORT")
    plan = _pg_plan(paths)
    ports = [moto_port, bridge_port, *([pg_port] if plan.embedded else [])]
    if len(set(ports)) != len(ports):
        raise ServiceError("FEEDLOT_MOTO_PORT, FEEDLOT_PG_PORT and FEEDLOT_LAMBDA_PORT must differ")
    _check_ports_first(paths, moto_port, pg_port, bridge_port, plan)
    api_port = _port("FEEDLOT_INGEST_API_PORT")
    _check_api_port_first(paths, api_port, ports)
    api_key = _api_key(paths)  # a configured key that is too short fails before anything starts

    # PostgreSQL first: a bad FEEDLOT_WAREHOUSE_URL then fails before anything else is started.
    services, warehouse_url, dagster_url = _start_postgres(paths, plan, pg_port)
    services.append(_start_moto(paths, moto_port))
    region = os.environ.get("AWS_DEFAULT_REGION") or DEFAULTS["AWS_DEFAULT_REGION"]
    aws_env = {
        "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{moto_port}",
        "AWS_DEFAULT_REGION": region,
        **LOCAL_AWS_ENV,
    }
    # Resource names the user overrode must reach every shell (and the bridge) using this stack.
    names = {k: os.environ[k] for k in DEFAULTS if k.startswith("FEEDLOT_") and os.environ.get(k)}

    _migrate(warehouse_url)
    env = {
        **aws_env,
        "FEEDLOT_WAREHOUSE_URL": warehouse_url,
        "FEEDLOT_DAGSTER_STORAGE_URL": dagster_url,
        "DAGSTER_HOME": str(_write_dagster_home(paths)),
        "FEEDLOT_STATE_DIR": str(paths.root),
        **names,
    }

    with environ({**aws_env, **names}):
        from feedlot_pipeline.local.provision import provision

        provisioned = provision(Settings())
        services.append(_start_bridge(paths, bridge_port, env))
        endpoint = f"http://{LOOPBACK}:{bridge_port}{BRIDGE_PATH}"
        subscription = _subscribe_bridge(provisioned.topic_arn, endpoint)
        _subscribe_bridge(
            provisioned.file_drops_topic_arn,
            f"http://{LOOPBACK}:{bridge_port}{BRIDGE_S3_PATH}",
            BRIDGE_S3_PATH,
        )
        env.update(
            {
                "FEEDLOT_INGEST_API_URL": f"http://{LOOPBACK}:{api_port}",
                "FEEDLOT_INGEST_API_KEY": api_key,
            }
        )
        services.append(_start_api_gateway(paths, api_port, env))
        # The worker EC2 instance and its SSM agent, which also serves the stack's SSM endpoint.
        from feedlot_pipeline.local.ssm_agent import start_worker

        agent, ssm_endpoint = start_worker(paths, _port("FEEDLOT_SSM_AGENT_PORT"), dict(env))
        services.append(agent)
        env["AWS_ENDPOINT_URL_SSM"] = ssm_endpoint
    _write_env(paths, env)
    return StackInfo(
        state_dir=paths.root,
        services=services,
        env=env,
        topic_arn=provisioned.topic_arn,
        subscription_arn=subscription,
        bridge_endpoint=endpoint,
        seconds=time.monotonic() - started,
        notes=_failure_notes(paths),
    )


def _check_ports_first(
    paths: _Paths, moto_port: int, pg_port: int, bridge_port: int, plan: _PgPlan
) -> None:
    """Fail before starting anything when a port we would have to bind is someone else's."""
    for name, marker, port, variable, what in (
        ("moto", MOTO_MARKER, moto_port, "FEEDLOT_MOTO_PORT", "moto server"),
        ("lambda_bridge", BRIDGE_MARKER, bridge_port, "FEEDLOT_LAMBDA_PORT", "Lambda bridge"),
    ):
        record = _read_record(paths.record(name)) or {}
        ours = record.get("port") == port and _ours(record.get("pid"), marker)
        if not ours and port_open(port):
            raise _port_taken(port, variable, what)
    if plan.embedded:
        pg = EmbeddedPostgres(paths.pg_data, pg_port)
        if not pg.running() and port_open(pg_port):
            raise _port_taken(pg_port, "FEEDLOT_PG_PORT", "embedded PostgreSQL")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child waits for its parent; it does not run)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group (it was started in its own session), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process is the parent (tests, demo)
        if not _running(pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the leader is gone or stuck: no member may outlive it


def down(state_dir: Path | str | None = None) -> list[ServiceInfo]:
    """Stop every process this stack started (bridge first, so it can finish its invocations)."""
    paths = _paths(state_dir or default_state_dir())
    result: list[ServiceInfo] = []
    for name, marker in (
        ("ssm_agent", SSM_AGENT_MARKER),
        ("api_gateway", API_MARKER),
        ("lambda_bridge", BRIDGE_MARKER),
        ("moto", MOTO_MARKER),
    ):
        record = _read_record(paths.record(name))
        if record is None:
            continue
        pid = record.get("pid")
        address = f"http://{LOOPBACK}:{record.get('port')}"
        if _ours(pid, marker):
            failures = paths.root / "lambda-failures"
            before = len(list(failures.glob("*.json"))) if failures.exists() else 0
            _stop_group(pid)
            after = len(list(failures.glob("*.json"))) if failures.exists() else 0
            detail = ""
            if after > before:  # the bridge drains for a while, then records what is left
                detail = f"{after - before} unfinished invocation(s) recorded in {failures}"
            result.append(ServiceInfo(name, address, pid, False, "stopped", detail=detail))
        else:
            result.append(ServiceInfo(name, address, pid, False, "not running"))
        paths.record(name).unlink(missing_ok=True)
    # The embedded server is stopped by its data dir, whatever the record says.
    server = EmbeddedPostgres(paths.pg_data, _pg_lock_port(paths) or 0)
    if (paths.pg_data / "postmaster.pid").exists():
        pid = server.pid()
        server.stop()
        result.append(ServiceInfo("postgres", f"{LOOPBACK}:{server.port}", pid, False, "stopped"))
    elif paths.pg_data.exists():
        result.append(ServiceInfo("postgres", "embedded", None, False, "not running"))
    # The postgres record stays: the next `up` recognises the URLs it derived (see _pg_plan).
    return result


def _failure_notes(paths: _Paths) -> list[str]:
    """A reminder of Lambda invocations that failed for good (their events are kept there)."""
    folder = paths.root / "lambda-failures"
    count = len(list(folder.glob("*.json"))) if folder.exists() else 0
    return [f"{count} failed Lambda invocation(s) recorded in {folder}"] if count else []


def _pg_lock_port(paths: _Paths) -> int | None:
    """Port of the embedded server from postmaster.pid (line 4), if it has one."""
    try:
        return int((paths.pg_data / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


def status(state_dir: Path | str | None = None) -> StackInfo:
    """What runs where; ``alive`` is False when any part is down or nothing was ever started."""
    paths = _paths(state_dir or default_state_dir())
    services: list[ServiceInfo] = []
    moto = _read_record(paths.record("moto"))
    if moto is not None:
        pid, port = moto.get("pid"), int(moto.get("port", 0))
        alive = _ours(pid, MOTO_MARKER) and port_open(port)
        services.append(
            ServiceInfo(
                "moto",
                f"http://{LOOPBACK}:{port}",
                pid,
                alive,
                "running" if alive else "down",
                paths.logs / "moto.log",
            )
        )
    pg = _read_record(paths.record("postgres"))
    if pg is not None:
        derived = pg.get("derived", {})
        if "FEEDLOT_WAREHOUSE_URL" not in derived:
            try:
                _check_answers(pg["warehouse_url"], "FEEDLOT_WAREHOUSE_URL", create_missing=False)
                alive, detail = True, "external"
            except ServiceError as err:
                alive, detail = False, str(err)
            services.append(
                ServiceInfo(
                    "warehouse",
                    "external",
                    None,
                    alive,
                    "external" if alive else "down",
                    None,
                    detail,
                )
            )
        if pg.get("mode") == "embedded":
            server = EmbeddedPostgres(Path(pg["data_dir"]), int(pg["port"]))
            alive = server.running()
            services.append(
                ServiceInfo(
                    "postgres",
                    f"{LOOPBACK}:{pg['port']}",
                    server.pid(),
                    alive,
                    "running" if alive else "down",
                    paths.logs / "postgres.log",
                    "embedded",
                )
            )
    bridge = _read_record(paths.record("lambda_bridge"))
    if bridge is not None:
        pid, port = bridge.get("pid"), int(bridge.get("port", 0))
        health = service_health(port) if _ours(pid, BRIDGE_MARKER) else None
        alive = bool(health) and health.get("pid") == pid
        detail = ""
        if health:
            detail = (
                f"received {health['received']}, succeeded {health['succeeded']}, "
                f"failed {health['failed']}, pending {health['pending']}"
            )
        services.append(
            ServiceInfo(
                "lambda_bridge",
                f"http://{LOOPBACK}:{port}",
                pid,
                alive,
                "running" if alive else "down",
                paths.logs / "lambda_bridge.log",
                detail,
            )
        )
    api = _read_record(paths.record("api_gateway"))
    if api is not None:
        pid, port = api.get("pid"), int(api.get("port", 0))
        health = service_health(port) if _ours(pid, API_MARKER) else None
        alive = bool(health) and health.get("pid") == pid
        detail = f"POST /consumo, {health['requests']} request(s)" if health else ""
        services.append(
            ServiceInfo(
                "api_gateway",
                f"http://{LOOPBACK}:{port}",
                pid,
                alive,
                "running" if alive else "down",
                paths.logs / "api_gateway.log",
                detail,
            )
        )
    from feedlot_pipeline.local.ssm_agent import agent_service_info

    agent = agent_service_info(paths)
    if agent is not None:
        services.append(agent)
    if services:  # a part `up` never got to is down too
        known = {s.name for s in services}
        for name in ("moto", "postgres", "lambda_bridge", "api_gateway"):
            if name not in known and not (name == "postgres" and "warehouse" in known):
                services.append(ServiceInfo(name, "-", None, False, "not started"))
    env_values = _parse_env_file(paths.env_file.read_text()) if paths.env_file.exists() else {}
    return StackInfo(
        state_dir=paths.root, services=services, env=env_values, notes=_failure_notes(paths)
    )


def env(state_dir: Path | str | None = None) -> dict[str, str]:
    """The variables ``up`` exported (from ``<state>/env``); ServiceError if up never ran."""
    paths = _paths(state_dir or default_state_dir())
    if not paths.env_file.exists():
        raise ServiceError(f"no local stack in {paths.root}: run `feedlot local up` first")
    return _parse_env_file(paths.env_file.read_text())
