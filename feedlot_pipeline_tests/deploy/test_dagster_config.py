"""The production Dagster instance and workspace (deploy/dagster/) load with Dagster's own code.

- dagster.yaml goes through ``dagster_instance_config`` (Dagster's instance schema), then every
  configurable class it names is resolved and its section validated against the class's own
  ``config_type()``; then a real ``DagsterInstance`` is built from the file against a PostgreSQL
  database (storage) and the moto server (the ECS run launcher describes its task definition on
  start-up; the compute log manager opens its S3 bucket), so the launcher, the coordinator's
  concurrency limits and the compute log manager are the objects Dagster would run with.
- workspace.yaml is validated with the workspace schema and loaded against a real code server
  (``dagster code-server start``, as the ECS service runs it) on a loopback port.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.local.services import free_port
from feedlot_pipeline_tests.deploy.cfn import REPO, TEMPLATE_DIR, load_template, render

DAGSTER_DIR = REPO / "deploy" / "dagster"
INSTANCE_YAML = DAGSTER_DIR / "dagster.yaml"
WORKSPACE_YAML = DAGSTER_DIR / "workspace.yaml"
LOCATION_NAME = "feedlot_pipeline"

# What the ECS task definitions provide (dagster-ecs.yaml); the test checks the templates too.
INSTANCE_ENV = (
    "FEEDLOT_DAGSTER_STORAGE_URL",
    "FEEDLOT_RUN_TASK_DEFINITION",
    "FEEDLOT_PROCESSED_BUCKET",
)


def _instance_config() -> dict:
    return yaml.safe_load(INSTANCE_YAML.read_text())


def _class(section: dict) -> type:
    return getattr(importlib.import_module(section["module"]), section["class"])


def _set_instance_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    defaults = {
        "FEEDLOT_DAGSTER_STORAGE_URL": "postgresql://dagster@127.0.0.1:5432/dagster",
        "FEEDLOT_RUN_TASK_DEFINITION": "feedlot-dev-run",
        "FEEDLOT_PROCESSED_BUCKET": "feedlot-processed",
    }
    for name in INSTANCE_ENV:
        monkeypatch.setenv(name, values.get(name, defaults[name]))


# --- schema -------------------------------------------------------------------------------------


def test_instance_yaml_passes_dagsters_instance_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    _set_instance_env(monkeypatch)
    config, custom_class = dagster_instance_config(str(DAGSTER_DIR))
    assert custom_class is None
    assert set(config) >= {"storage", "run_launcher", "run_coordinator", "compute_logs"}
    # The project's storage class, as the local dagster.yaml names it; the URL stays a reference
    # in the file and each storage class resolves it where it starts.
    storage = config["storage"]["custom"]
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["storage"]["custom"]
    assert (storage["module"], storage["class"]) == (local["module"], local["class"])
    assert storage["config"]["postgres_url"] == {"env": "FEEDLOT_DAGSTER_STORAGE_URL"}


def test_instance_yaml_fails_without_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The storage schema resolves the env: reference: an ECS task missing the secret fails at
    # start-up with Dagster's message, not later in a run.
    from dagster._config import process_config
    from dagster._core.storage.config import pg_config

    _set_instance_env(monkeypatch)
    section = _instance_config()["storage"]["custom"]["config"]
    from dagster_postgres import DagsterPostgresStorage

    # PooledPostgresStorage keeps dagster-postgres's config (validated with its schema here).
    assert issubclass(_class(_instance_config()["storage"]["custom"]), DagsterPostgresStorage)
    assert process_config(pg_config(), section).success
    monkeypatch.delenv("FEEDLOT_DAGSTER_STORAGE_URL")
    result = process_config(pg_config(), section)
    assert not result.success
    assert "FEEDLOT_DAGSTER_STORAGE_URL" in " ".join(e.message for e in result.errors or [])


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("run_launcher", "dagster_aws.ecs.launcher.EcsRunLauncher"),
        ("compute_logs", "dagster_aws.s3.compute_log_manager.S3ComputeLogManager"),
        ("run_coordinator", "dagster._core.run_coordinator.queued_run_coordinator"),
        ("local_artifact_storage", "dagster._core.storage.root.LocalArtifactStorage"),
        ("storage", "feedlot_pipeline.core.dagster_instance.PooledPostgresStorage"),
    ],
)
def test_each_class_section_passes_its_own_config_type(
    section: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._config import process_config
    from dagster._serdes import ConfigurableClass

    _set_instance_env(monkeypatch)
    data = _instance_config()[section]
    data = data.get("custom", data)  # storage: custom: module/class/config
    cls = _class(data)
    assert issubclass(cls, ConfigurableClass)
    assert f"{cls.__module__}.{cls.__name__}".startswith(expected)
    result = process_config(cls.config_type(), data.get("config", {}))
    assert result.success, [e.message for e in result.errors or []]


def test_a_wrong_launcher_key_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The per-class validation above does reject what the class does not know.
    from dagster._config import process_config
    from dagster_aws.ecs import EcsRunLauncher

    _set_instance_env(monkeypatch)
    config = dict(_instance_config()["run_launcher"]["config"], task_role="not-a-field")
    assert not process_config(EcsRunLauncher.config_type(), config).success


def test_concurrency_limits_match_the_batched_run_model() -> None:
    coordinator = _instance_config()["run_coordinator"]["config"]
    limits = {
        (limit["key"], yaml.safe_dump(limit.get("value"))): limit["limit"]
        for limit in coordinator["tag_concurrency_limits"]
    }
    # One streaming batch at a time, one analytics refresh at a time ...
    assert limits[("feedlot/lane", yaml.safe_dump("stream"))] == 1
    assert limits[("feedlot/lane", yaml.safe_dump("analytics"))] == 1
    # ... and one run per farm × day partition at a time.
    per_value = yaml.safe_dump({"applyLimitPerUniqueValue": True})
    assert limits[("dagster/partition", per_value)] == 1
    # The same limits as the local dagster.yaml, and the lanes the code tags its runs with.
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_coordinator"]["config"]
    assert coordinator["tag_concurrency_limits"] == local["tag_concurrency_limits"]
    from feedlot_pipeline.analytics.refresh import ANALYTICS_LANE, LANE_TAG

    assert (LANE_TAG, yaml.safe_dump(ANALYTICS_LANE)) in limits


def test_run_monitoring_fails_dead_runs_and_retries_them() -> None:
    config = _instance_config()
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    # A dead batch is failed, then retried whole (idempotent loads), as locally.
    assert monitoring["max_resume_run_attempts"] == 0
    assert config["run_retries"]["enabled"] is True
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_monitoring"]
    assert local["max_resume_run_attempts"] == monitoring["max_resume_run_attempts"]


# --- the instance, built ------------------------------------------------------------------------


@pytest.fixture()
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = _instance_config()
    config["local_artifact_storage"]["config"]["base_dir"] = str(tmp_path / "storage")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def test_instance_builds_with_ecs_launcher_s3_logs_and_postgres(
    dagster_home: Path,
    empty_pg_url: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    tag = uuid.uuid4().hex[:8]
    bucket = f"t{tag}-processed"
    client("s3").create_bucket(Bucket=bucket)
    family = f"t{tag}-run"
    registered = client("ecs").register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="4096",
        containerDefinitions=[{"name": "run", "image": "feedlot:test", "essential": True}],
    )["taskDefinition"]
    # dagster-postgres speaks psycopg2: the URL the storage secret holds has no driver suffix.
    storage_url = empty_pg_url.replace("postgresql+psycopg://", "postgresql://")
    _set_instance_env(
        monkeypatch,
        FEEDLOT_DAGSTER_STORAGE_URL=storage_url,
        FEEDLOT_RUN_TASK_DEFINITION=family,
        FEEDLOT_PROCESSED_BUCKET=bucket,
    )

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        # The short family name became the registered revision's ARN (DescribeTaskDefinition).
        assert launcher.task_definition == registered["taskDefinitionArn"]
        assert launcher.container_name == "run"
        assert launcher.secrets_tags == []

        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 10
        keys = {limit["key"] for limit in queue.tag_concurrency_limits}
        assert keys == {"feedlot/lane", "dagster/partition"}

        logs = instance.compute_log_manager
        assert isinstance(logs, S3ComputeLogManager)
        assert logs._s3_bucket == bucket  # noqa: SLF001 - what the webserver reads from
        assert logs._s3_prefix == "dagster/compute-logs"  # noqa: SLF001

        # The project's storage: batched check results through the pooled event log.
        from feedlot_pipeline.core.dagster_instance import BatchedCheckEventLogStorage

        assert isinstance(instance.event_log_storage, BatchedCheckEventLogStorage)

        # The storage really is the PostgreSQL database: a run written is a run read back.
        from dagster._core.test_utils import create_run_for_test

        run = create_run_for_test(instance, job_name="smoke", tags={"feedlot/lane": "stream"})
        assert instance.get_run_by_id(run.run_id).tags["feedlot/lane"] == "stream"


def test_instance_refuses_a_missing_run_container(
    dagster_home: Path,
    empty_pg_url: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A task definition without the `run` container fails when the daemon starts, not per run.
    from dagster import DagsterInstance

    family = f"t{uuid.uuid4().hex[:8]}-norun"
    client("ecs").register_task_definition(
        family=family,
        containerDefinitions=[
            {"name": "app", "image": "feedlot:test", "essential": True, "memory": 512}
        ],
    )
    _set_instance_env(
        monkeypatch,
        FEEDLOT_DAGSTER_STORAGE_URL=empty_pg_url.replace("+psycopg", ""),
        FEEDLOT_RUN_TASK_DEFINITION=family,
    )
    with (
        DagsterInstance.from_config(str(dagster_home)) as instance,
        pytest.raises(Exception, match="container 'run'"),
    ):
        _ = instance.run_launcher


# --- the workspace ------------------------------------------------------------------------------


def test_workspace_yaml_passes_the_workspace_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    monkeypatch.setenv("FEEDLOT_CODE_SERVER_HOST", "code-server.feedlot.internal")
    config = yaml.safe_load(WORKSPACE_YAML.read_text())
    processed = ensure_workspace_config(config, str(WORKSPACE_YAML))
    (entry,) = processed["load_from"]
    server = entry["grpc_server"]
    assert server["location_name"] == LOCATION_NAME
    assert server["port"] == 4000


@pytest.fixture()
def code_server() -> Iterator[int]:
    """``dagster code-server start`` as the ECS service runs it, on a free loopback port."""
    port = free_port()
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen(
        [
            str(exe),
            "code-server",
            "start",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "feedlot_pipeline.definitions",
            "-a",
            "defs",
            "--location-name",
            LOCATION_NAME,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DAGSTER_HOME": ""},
    )
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_workspace_loads_the_code_location_from_the_code_server(
    code_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterInstance
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    monkeypatch.setenv("FEEDLOT_CODE_SERVER_HOST", "127.0.0.1")
    workspace = tmp_path / "workspace.yaml"
    # The production file with only the port changed (4000 may be taken on a shared machine).
    text = WORKSPACE_YAML.read_text()
    assert "port: 4000" in text
    workspace.write_text(text.replace("port: 4000", f"port: {code_server}"))
    (origin,) = location_origins_from_yaml_paths([str(workspace)])
    assert origin.location_name == LOCATION_NAME

    deadline = time.monotonic() + 90
    with DagsterInstance.ephemeral() as instance:
        while True:
            try:
                location = origin.create_location(instance)
                break
            except Exception:  # noqa: BLE001 - the server is still importing the package
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        with location:
            (repository,) = location.get_repositories().values()
            has_job = repository.has_job("ingest_consumption_job")
            sensors = {s.name for s in repository.get_sensors()}
    assert has_job
    assert "consumption_events_sensor" in sensors


# --- what the ECS task definitions must provide ---------------------------------------------------


def test_ecs_task_definitions_provide_the_instance_environment() -> None:
    template = load_template(TEMPLATE_DIR / "dagster-ecs.yaml")
    res = template["Resources"]
    for logical_id in ("WebserverTaskDefinition", "DaemonTaskDefinition", "RunTaskDefinition"):
        (container,) = res[logical_id]["Properties"]["ContainerDefinitions"]
        env = {e["Name"] for e in container.get("Environment", [])}
        secrets = {s["Name"] for s in container.get("Secrets", [])}
        assert "FEEDLOT_DAGSTER_STORAGE_URL" in secrets, logical_id
        assert "FEEDLOT_DAGSTER_STORAGE_URL" not in env, logical_id
        assert {"FEEDLOT_RUN_TASK_DEFINITION", "FEEDLOT_PROCESSED_BUCKET"} <= env, logical_id
        assert "DAGSTER_HOME" in env
    # The webserver and the daemon find the code server at the name workspace.yaml reads.
    for logical_id in ("WebserverTaskDefinition", "DaemonTaskDefinition"):
        (container,) = res[logical_id]["Properties"]["ContainerDefinitions"]
        env = {e["Name"]: render(e["Value"]) for e in container["Environment"]}
        assert env["FEEDLOT_CODE_SERVER_HOST"] == "code-server.${ServiceNamespaceName}"
    (run,) = res["RunTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert run["Name"] == _instance_config()["run_launcher"]["config"]["container_name"]
