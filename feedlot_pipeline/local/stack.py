"""The local stack behind ``feedlot local up|down|status|env`` (and ``feedlot demo``).

What the cloud provides, on loopback: a moto server (provisioned like AWS), a PostgreSQL (the one
``FEEDLOT_WAREHOUSE_URL`` names, else an embedded one) holding the warehouse and Dagster's storage,
and the emulators for what moto cannot run: the Lambda bridge that moto's SNS delivers to, the API
gateway, and the worker's SSM agent. Everything lives under one state folder (``state.py``).

``up`` is idempotent: parts already running are reused, so it is also the "make sure" call. An
``up`` that fails half-way stops what it started itself and leaves what it reused; ``down`` stops
whatever a record names, also after an ``up`` that was killed.

Where the pieces are: ``databases.py`` (warehouse and Dagster storage), ``components.py`` (the
processes), ``supervisor.py`` (starting, reusing and stopping one process), ``state.py`` (files).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from feedlot_pipeline.core import settings as config
from feedlot_pipeline.local import components, databases, supervisor
from feedlot_pipeline.local.components import (  # noqa: F401 - re-exported
    API_MARKER,
    BRIDGE_MARKER,
    BRIDGE_PATH,
    BRIDGE_S3_PATH,
    MOTO_MARKER,
    PROCESSES,
    SSM_AGENT_MARKER,
)
from feedlot_pipeline.local.services import LOOPBACK, ServiceError, environ, port_open
from feedlot_pipeline.local.state import (  # noqa: F401 - re-exported
    StatePaths,
    export_lines,
    read_env_file,
    read_record,
    state_paths,
    write_dagster_home,
    write_env_file,
)
from feedlot_pipeline.local.supervisor import (  # noqa: F401 - re-exported
    ServiceInfo,
    env_digest,
    service_health,
)

# Dummy credentials: moto accepts any; exporting them keeps real ones from being sent to it.
LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
WAREHOUSE_DB = databases.WAREHOUSE_DB


def default_state_dir() -> Path:
    return config.LocalSettings().state_dir


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


# --- up ------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def overridden_settings() -> dict[str, str]:
    """The FEEDLOT_* settings with a default that the environment overrides (resource names,
    rules, handlers…): every shell and process using this stack must see them too."""
    out: dict[str, str] = {}
    for cls in config.ALL:
        values = cls()
        prefix = cls.model_config.get("env_prefix", "")
        for name in values.model_fields_set:
            alias = cls.model_fields[name].validation_alias
            variable = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
            if variable.startswith("FEEDLOT_") and variable in config.DEFAULTS:
                out[variable] = _text(getattr(values, name))
    return dict(sorted(out.items()))


def _check_ports_first(
    paths: StatePaths, ports: dict[str, int], plan: databases.PgPlan, pg_port: int
) -> None:
    """Fail before starting anything when a port we would have to bind is someone else's."""
    chosen = [*ports.values(), *([pg_port] if plan.embedded else [])]
    if len(set(chosen)) != len(chosen):
        names = [variable for variable, _ in components.PORT_VARIABLES.values()]
        if plan.embedded:
            names.append("FEEDLOT_PG_PORT")
        raise ServiceError(f"{', '.join(names)} must all differ")
    for name, port in ports.items():
        variable, what = components.PORT_VARIABLES[name]
        record = read_record(paths.record(name)) or {}
        recorded = record.get("port") == port
        mine = recorded and supervisor.recorded_pid(paths, name, components.PROCESSES[name])
        # One of ours that just died (killed) may hold its port a moment longer.
        if not mine and port_open(port) and not (recorded and supervisor.released(port)):
            raise supervisor.port_taken(port, variable, what)
    if plan.embedded:
        databases.check_embedded_port(paths, pg_port)


def _undo(steps: list[Callable[[], object]]) -> None:
    for step in reversed(steps):
        with contextlib.suppress(Exception):
            step()


def up(state_dir: Path | str | None = None, accept_empty_lake: bool = False) -> StackInfo:
    """Start (or reuse) PostgreSQL, moto, the Lambda bridge, the API gateway and the SSM agent;
    provision; write the env file. On failure, stop what this call started and raise.

    moto keeps the lake (buckets, objects, dead letters) in ``<state>/moto`` across restarts.
    When the lake has no raw object but the warehouse has rows (the lake was lost some other
    way), ``up`` refuses with a ServiceError saying so, unless ``accept_empty_lake``
    (``lake_guard.py``)."""
    started = time.monotonic()
    try:
        local, settings = config.LocalSettings(), config.Settings()
        worker, backup = config.WorkerSettings(), config.BackupSettings()
        names = overridden_settings()
    except ValidationError as err:
        raise ServiceError(f"invalid setting: {err}") from None
    paths = state_paths(state_dir or local.state_dir).prepare()
    ports = {
        "moto": local.moto_port,
        "lambda_bridge": local.lambda_port,
        "api_gateway": local.ingest_api_port,
        "ssm_agent": local.ssm_agent_port,
    }
    plan = databases.pg_plan(paths, settings)
    _check_ports_first(paths, ports, plan, local.pg_port)
    api_key = components.api_key(paths, settings)  # a short configured key fails here

    undo: list[Callable[[], object]] = []

    def started_here(info: ServiceInfo) -> ServiceInfo:
        if info.state in ("started", "restarted"):
            if info.name == "postgres":
                undo.append(lambda: databases.stop_embedded(paths))
            else:
                marker = components.PROCESSES[info.name]
                undo.append(lambda: supervisor.stop(paths, info.name, marker))
        return info

    try:
        # PostgreSQL first: a bad FEEDLOT_WAREHOUSE_URL then fails before anything else starts.
        services, warehouse_url, dagster_url = databases.start_postgres(paths, plan, local.pg_port)
        for info in services:
            started_here(info)
        moto = components.start_moto(
            paths,
            ports["moto"],
            durable_queues=(
                settings.sensor_dlq,
                settings.large_file_dlq,
                settings.failures_inbox,
                local.records_inbox,
                local.records_inbox_dlq,
                config.ObservabilitySettings().alerts_inbox,
            ),
            fsync=local.moto_fsync,
        )
        services.append(started_here(moto))
        aws_env = {
            "AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{ports['moto']}",
            "AWS_DEFAULT_REGION": settings.region,
            **LOCAL_AWS_ENV,
        }
        databases.migrate(warehouse_url)
        notes = _check_lake(paths, plan, warehouse_url, aws_env, settings, accept_empty_lake)
        env = {
            **aws_env,
            "FEEDLOT_WAREHOUSE_URL": warehouse_url,
            "FEEDLOT_DAGSTER_STORAGE_URL": dagster_url,
            "DAGSTER_HOME": str(write_dagster_home(paths)),
            "FEEDLOT_STATE_DIR": str(paths.root),  # absolute, whatever the shell said
            # Dagster writes a batch run's per-partition materializations in one INSERT.
            "DAGSTER_EVENT_BATCH_SIZE": "1000",
        }
        env |= {k: v for k, v in names.items() if k not in env}
        with environ({**aws_env, **names}):
            from feedlot_pipeline.local.provision import provision

            provisioned = provision(config.Settings())
            # The client map the landing Lambdas and the sensor read (client_map_sensor keeps
            # it current from then on).
            from feedlot_pipeline.core import client_map
            from feedlot_pipeline.warehouse.store import Warehouse

            with Warehouse(warehouse_url) as wh:
                client_map.publish(config.Settings().lake_bucket, wh.clients())
            bridge = components.start_bridge(
                paths, ports["lambda_bridge"], env, config.LocalSettings().records_inbox
            )
            services.append(started_here(bridge))
            # The records topic reaches the bridge through its durable inbox queue (provisioned
            # and subscribed above), not over http: nothing published while it is down is lost.
            endpoint = f"{bridge.address}{BRIDGE_PATH}"
            components.unsubscribe_http(provisioned.topic_arn)
            subscription = provisioned.records_inbox_url
            components.subscribe_bridge(
                provisioned.file_drops_topic_arn,
                f"{bridge.address}{BRIDGE_S3_PATH}",
                BRIDGE_S3_PATH,
            )
            env["FEEDLOT_INGEST_API_URL"] = f"http://{LOOPBACK}:{ports['api_gateway']}"
            env["FEEDLOT_INGEST_API_KEY"] = api_key
            gateway = components.start_api_gateway(paths, ports["api_gateway"], env)
            services.append(started_here(gateway))
            # The worker EC2 instance and its SSM agent, which also serves the SSM endpoint.
            agent, ssm_endpoint = components.start_ssm_agent(
                paths, ports["ssm_agent"], dict(env), worker, backup
            )
            services.append(started_here(agent))
        env["AWS_ENDPOINT_URL_SSM"] = ssm_endpoint
        write_env_file(paths, env)
    except BaseException:
        _undo(undo)
        raise
    return StackInfo(
        state_dir=paths.root,
        services=services,
        env=env,
        topic_arn=provisioned.topic_arn,
        subscription_arn=subscription,
        bridge_endpoint=endpoint,
        seconds=time.monotonic() - started,
        notes=notes + _failure_notes(paths),
    )


def _check_lake(
    paths: StatePaths,
    plan: databases.PgPlan,
    warehouse_url: str,
    aws_env: dict[str, str],
    settings: config.Settings,
    accept: bool,
) -> list[str]:
    """Refuse (ServiceError) a warehouse with rows over a lake without raw objects."""
    from feedlot_pipeline.local import lake_guard

    with environ(aws_env):
        found = lake_guard.LakeState(
            warehouse_rows=lake_guard.warehouse_rows(warehouse_url),
            raw_objects=lake_guard.has_raw_objects(settings.lake_bucket),
        )
    default = default_state_dir().expanduser().resolve()
    option = "" if paths.root == default else f"--state-dir {paths.root}"
    note = lake_guard.check(
        paths, found, settings.lake_bucket, accept, not plan.warehouse_url, option
    )
    return [note] if note else []


# --- down, status, env ---------------------------------------------------------------------------


def down(state_dir: Path | str | None = None, wipe: bool = False) -> list[ServiceInfo]:
    """Stop every process this stack started (the bridge before moto, so it can finish its
    invocations), then the embedded PostgreSQL. With ``wipe``, then delete the stack's data:
    the local lake and its dead letters (``<state>/moto``) and the embedded PostgreSQL
    (warehouse and Dagster runs); a configured FEEDLOT_WAREHOUSE_URL is never touched."""
    paths = state_paths(state_dir or default_state_dir())
    result: list[ServiceInfo] = []
    for name, marker in PROCESSES.items():
        record = read_record(paths.record(name))
        if record is None:
            continue
        address = f"http://{LOOPBACK}:{record.get('port')}"
        before = paths.failure_count()
        pid = supervisor.stop(paths, name, marker)
        if pid is None:
            result.append(ServiceInfo(name, address, record.get("pid"), False, "not running"))
            continue
        after = paths.failure_count()
        detail = ""
        if after > before:  # the bridge drains for a while, then records what is left
            detail = f"{after - before} unfinished invocation(s) recorded in {paths.failures}"
        result.append(ServiceInfo(name, address, pid, False, "stopped", detail=detail))
    # Dagster before the embedded PostgreSQL that holds its runs: left-over code servers of a
    # `feedlot dev` that was killed (nothing else stops them).
    dagster = supervisor.stop_processes(supervisor.dagster_processes(paths.dagster_home))
    if dagster:
        pids = ", ".join(str(p) for p in dagster)
        result.append(
            ServiceInfo("dagster", str(paths.dagster_home), None, False, "stopped", detail=pids)
        )
    postgres = databases.stop_embedded(paths)
    if postgres is not None:
        result.append(postgres)
    # The postgres record stays: the next `up` recognises the URLs it derived (pg_plan).
    if wipe:
        result.extend(_wipe(paths))
    return result


def _wipe(paths: StatePaths) -> list[ServiceInfo]:
    """Delete the lake's journal and the embedded PostgreSQL's folder (after ``down``)."""
    import shutil

    wiped: list[ServiceInfo] = []
    for name, folder, what in (
        ("lake", paths.lake, "S3 buckets, objects and dead letters"),
        ("postgres", paths.pg_data.parent, "embedded warehouse and Dagster runs"),
    ):
        if folder.exists():
            shutil.rmtree(folder)
            wiped.append(ServiceInfo(name, str(folder), None, False, "wiped", detail=what))
    return wiped


def _failure_notes(paths: StatePaths) -> list[str]:
    """A reminder of Lambda invocations that failed for good (their events are kept there)."""
    count = paths.failure_count()
    return [f"{count} failed Lambda invocation(s) recorded in {paths.failures}"] if count else []


def status(state_dir: Path | str | None = None) -> StackInfo:
    """What runs where; ``alive`` is False when any part is down or nothing was ever started."""
    paths = state_paths(state_dir or default_state_dir())
    processes = {s.name: s for s in components.status_lines(paths)}
    services = [
        *([processes.pop("moto")] if "moto" in processes else []),
        *databases.status_lines(paths),
        *processes.values(),
    ]
    if services:  # a part `up` never got to is down too
        known = {s.name for s in services}
        for name in ("moto", "postgres", "lambda_bridge", "api_gateway", "ssm_agent"):
            if name not in known and not (name == "postgres" and "warehouse" in known):
                services.append(ServiceInfo(name, "-", None, False, "not started"))
    return StackInfo(
        state_dir=paths.root,
        services=services,
        env=read_env_file(paths) or {},
        notes=_failure_notes(paths),
    )


def env(state_dir: Path | str | None = None) -> dict[str, str]:
    """The variables ``up`` exported (from ``<state>/env``); ServiceError if up never ran."""
    paths = state_paths(state_dir or default_state_dir())
    values = read_env_file(paths)
    if values is None:
        raise ServiceError(f"no local stack in {paths.root}: run `feedlot local up` first")
    return values
