"""The stack's own processes — moto, the Lambda bridge, the API gateway, the SSM agent — each
started, reused or reported through the one supervisor (``supervisor.ensure_running``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping

from feedlot_pipeline.core.settings import BackupSettings, Settings, WorkerSettings
from feedlot_pipeline.local.services import LOOPBACK, ServiceError
from feedlot_pipeline.local.state import StatePaths, read_env_file
from feedlot_pipeline.local.supervisor import ServiceInfo, ServiceSpec, ensure_running, probe

# moto with its hot spots fixed (moto_speedups.py) and the lake journaled (moto_server.py)
MOTO_MARKER = "feedlot_pipeline.local.moto_server"
MOTO_STARTUP_SECONDS = 300.0  # it listens once the journal is replayed: ~5 s per 50,000 objects
BRIDGE_MARKER = "feedlot_pipeline.local.lambda_bridge"
API_MARKER = "feedlot_pipeline.local.api_gateway"
SSM_AGENT_MARKER = "feedlot_pipeline.local.ssm_agent"
BRIDGE_PATH = "/sns"
BRIDGE_S3_PATH = "/s3"  # file drops: S3 → SNS feedlot-file-drops → bridge → lambdas.s3_handler
# name → marker, in the order ``down`` stops them (the bridge before moto: it drains into it).
PROCESSES: dict[str, str] = {
    "ssm_agent": SSM_AGENT_MARKER,
    "api_gateway": API_MARKER,
    "lambda_bridge": BRIDGE_MARKER,
    "moto": MOTO_MARKER,
}
PORT_VARIABLES: dict[str, tuple[str, str]] = {  # name → (variable, what)
    "moto": ("FEEDLOT_MOTO_PORT", "moto server"),
    "lambda_bridge": ("FEEDLOT_LAMBDA_PORT", "Lambda bridge"),
    "api_gateway": ("FEEDLOT_INGEST_API_PORT", "API gateway"),
    "ssm_agent": ("FEEDLOT_SSM_AGENT_PORT", "SSM agent"),
}


def _info(
    paths: StatePaths, spec: ServiceSpec, detail: str | Callable[[dict], str] = ""
) -> ServiceInfo:
    running = ensure_running(paths, spec)
    if callable(detail):
        detail = detail(running.health)
    return ServiceInfo(
        spec.name, spec.address, running.pid, True, running.state, paths.log(spec.name), detail
    )


def _spec(name: str, args: list[str], port: int, **kwargs) -> ServiceSpec:  # noqa: ANN003
    variable, what = PORT_VARIABLES[name]
    return ServiceSpec(name, PROCESSES[name], tuple(args), port, variable, what, **kwargs)


def _common(paths: StatePaths, port: int) -> list[str]:
    return ["--host", LOOPBACK, "--port", str(port), "--state-dir", str(paths.root)]


def start_moto(
    paths: StatePaths, port: int, durable_queues: Iterable[str] = (), fsync: bool = False
) -> ServiceInfo:
    """moto, keeping its S3 buckets and the ``durable_queues`` in ``paths.lake`` across restarts
    and kills (``moto_server.py``). Another set of queues or fsync mode restarts it (which
    loses only what moto does not journal: topics, other queues; ``up`` provisions them)."""
    queues = sorted(set(durable_queues))
    args = ["-H", LOOPBACK, "-p", str(port), "--journal", str(paths.lake)]
    args += [arg for queue in queues for arg in ("--durable-queue", queue)]
    args += ["--fsync"] if fsync else []
    spec = _spec(
        "moto",
        args,
        port,
        health=False,
        extra={"journal": str(paths.lake), "durable_queues": queues, "fsync": fsync},
        startup_seconds=MOTO_STARTUP_SECONDS,
    )
    return _info(paths, spec, f"lake in {paths.lake}")


def start_bridge(
    paths: StatePaths, port: int, child_env: Mapping[str, str], records_inbox: str = ""
) -> ServiceInfo:
    """Reuse a healthy bridge started with the same environment; else (re)start it.

    With ``records_inbox`` it polls that queue (the records topic's durable inbox)."""
    args = _common(paths, port) + (["--records-inbox", records_inbox] if records_inbox else [])
    spec = _spec(
        "lambda_bridge",
        args,
        port,
        env=dict(child_env),  # a bridge talking to another moto or warehouse is restarted
        extra={"records_inbox": records_inbox},
        # an older bridge without the /s3 route or the inbox
        accept=lambda health: "s3" in health and ("inbox" in health) == bool(records_inbox),
    )
    return _info(paths, spec, lambda health: health.get("handler", ""))


def subscribe_bridge(topic_arn: str, endpoint: str, path: str = BRIDGE_PATH) -> str:
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


def unsubscribe_http(topic_arn: str, path: str = BRIDGE_PATH) -> int:
    """Remove loopback bridge ``http`` subscriptions of ``topic_arn`` (the topic now reaches the
    bridge through its inbox queue); returns how many."""
    from feedlot_pipeline.core.aws import client

    sns = client("sns")
    removed = 0
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            endpoint = sub.get("Endpoint", "")
            if (
                sub.get("Protocol") == "http"
                and endpoint.startswith(f"http://{LOOPBACK}:")
                and endpoint.endswith(path)
                and sub["SubscriptionArn"].startswith("arn:")
            ):
                sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
                removed += 1
    return removed


def api_key(paths: StatePaths, settings: Settings | None = None) -> str:
    """The configured FEEDLOT_INGEST_API_KEY, else the key this stack generated before, else new.

    Never a built-in value: a fresh random key per state folder, kept across ``up``s so shells
    that loaded the env file keep working.
    """
    from feedlot_pipeline.local.api_gateway import MIN_KEY_LENGTH

    s = settings or Settings()
    configured = s.ingest_api_key.get_secret_value() if s.ingest_api_key else ""
    if configured:
        if len(configured) < MIN_KEY_LENGTH:
            raise ServiceError(
                f"FEEDLOT_INGEST_API_KEY must be at least {MIN_KEY_LENGTH} characters"
            )
        return configured
    previous = (read_env_file(paths) or {}).get("FEEDLOT_INGEST_API_KEY", "")
    if len(previous) >= MIN_KEY_LENGTH:
        return previous
    return secrets.token_urlsafe(32)


def start_api_gateway(paths: StatePaths, port: int, child_env: Mapping[str, str]) -> ServiceInfo:
    """Reuse a healthy gateway started with the same environment (key included); else restart."""
    spec = _spec("api_gateway", _common(paths, port), port, env=dict(child_env))
    return _info(paths, spec, "POST /consumo")


def start_ssm_agent(
    paths: StatePaths,
    port: int,
    child_env: Mapping[str, str],
    worker: WorkerSettings,
    backup: BackupSettings,
) -> tuple[ServiceInfo, str]:
    """Register the worker instance in moto (tagged per ``worker``, its data volume per
    ``backup``) and start (or reuse) its agent, passing it the instance id.

    Returns the agent's ServiceInfo and the SSM endpoint URL to export as AWS_ENDPOINT_URL_SSM.
    Runs with this process's environment pointed at the stack's moto.
    """
    from feedlot_pipeline.local.ssm_instance import register_worker_instance

    instance = register_worker_instance(
        worker.worker_tag_key,
        worker.worker_tag_value,
        backup.backup_tag_key,
        backup.backup_tag_value,
    )
    args = ["--instance-id", instance.instance_id, "--state-dir", str(paths.root)]
    spec = _spec(
        "ssm_agent",
        [*args, "--port", str(port)],
        port,
        env=dict(child_env),
        extra={"instance_id": instance.instance_id, "volume_id": instance.volume_id},
    )
    detail = f"instance {instance.instance_id}, volume {instance.volume_id}"
    return _info(paths, spec, detail), spec.address


# --- `feedlot local status` ----------------------------------------------------------------------


def _line(paths: StatePaths, name: str, detail: str, health: dict, record: dict) -> ServiceInfo:
    alive = bool(health)
    return ServiceInfo(
        name,
        f"http://{LOOPBACK}:{record.get('port')}",
        record.get("pid"),
        alive,
        "running" if alive else "down",
        paths.log(name),
        detail,
    )


def status_lines(paths: StatePaths) -> list[ServiceInfo]:
    """One line per process this stack recorded (moto, bridge, gateway, agent)."""
    lines: list[ServiceInfo] = []
    for name in ("moto", "lambda_bridge", "api_gateway", "ssm_agent"):
        record, health = probe(paths, name, PROCESSES[name], health=name != "moto")
        if not record:
            continue
        detail = ""
        if name == "moto":
            detail = f"lake in {paths.lake}"
        elif name == "lambda_bridge" and health:
            detail = (
                f"received {health['received']}, succeeded {health['succeeded']}, "
                f"failed {health['failed']}, pending {health['pending']}"
            )
        elif name == "api_gateway" and health:
            detail = f"POST /consumo, {health['requests']} request(s)"
        elif name == "ssm_agent":
            detail = f"instance {record.get('instance_id')}"
            if health:
                detail += (
                    f", commands {health['commands']}, running {health['running']}, "
                    f"failed {health['failed']}"
                )
        lines.append(_line(paths, name, detail, health, record))
    return lines
