"""The local stack's state folder: where each file lives, and how files are written.

Everything of a stack lives under one folder (default ``./.feedlot``): pid records (``run/``),
logs, the ``env`` file, PostgreSQL's data, the local lake (moto's journal: S3 objects and dead
letters), Dagster's home, Lambda failure records, the SSM agent's state and the worker's EBS
stand-in. Several of them hold URLs with passwords, the API key or
records, so folders are created ``0700`` and files ``0600`` (readable by the owner only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

# Used only when neither the working directory nor the source checkout has a dagster.yaml.
FALLBACK_DAGSTER_YAML = """\
storage:
  custom:
    module: feedlot_pipeline.core.dagster_instance
    class: PooledPostgresStorage
    config:
      postgres_url:
        env: FEEDLOT_DAGSTER_STORAGE_URL
run_launcher:
  module: feedlot_pipeline.core.dagster_instance
  class: MonitoredRunLauncher
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 3
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      - key: feedlot/lane
        value: stream
        limit: 1
      - key: feedlot/lane
        value: analytics
        limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 120
  max_resume_run_attempts: 0
  poll_interval_seconds: 10
run_retries:
  enabled: true
  max_retries: 2
telemetry:
  enabled: false
"""


# --- private files -------------------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; tighten it when it exists.

    An existing folder keeps only its owner's bits and "others may traverse" (0701): the
    embedded PostgreSQL, run as another user when we are root, needs to pass through.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(OSError):  # a folder of another owner: leave it as it is
        mode = path.stat().st_mode & 0o777
        tight = mode & (PRIVATE_DIR | 0o001)
        if tight != mode:
            path.chmod(tight)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if missing, else make it 0600; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def open_private_log(path: Path):  # noqa: ANN201 - a binary file object
    """``path`` opened for appending (a child process's stdout), mode 0600."""
    return open(private_file(path), "ab")  # noqa: SIM115 - the caller closes it


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by the owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # also when a stale temporary file existed
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_record(path: Path, record: dict) -> None:
    write_private(path, json.dumps(record, indent=2))


# --- the folder ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatePaths:
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
    def lake(self) -> Path:
        """moto's journal: buckets, objects and dead-letter messages (``local/journal.py``)."""
        return self.root / "moto"

    @property
    def accepted_empty_lake(self) -> Path:
        """Written by ``up --accept-empty-lake``; lives with the lake, so it goes when the lake
        does (a lake lost again is refused again)."""
        return self.lake / "accepted-empty-lake.json"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def failures(self) -> Path:
        """Lambda invocations that failed for good (the bridge's on-failure records)."""
        return self.root / "lambda-failures"

    def record(self, name: str) -> Path:
        return self.run / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def prepare(self) -> StatePaths:
        """Create the folders every command needs, private."""
        for folder in (self.root, self.logs, self.run):
            private_dir(folder)
        return self

    def failure_count(self) -> int:
        return len(list(self.failures.glob("*.json"))) if self.failures.exists() else 0


def state_paths(state_dir: Path | str) -> StatePaths:
    return StatePaths(Path(state_dir).expanduser().resolve())


# --- the env file --------------------------------------------------------------------------------


def export_lines(env: dict[str, str]) -> str:
    """Shell lines for ``eval "$(feedlot local env)"`` or ``set -a; . .feedlot/env``."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def write_env_file(paths: StatePaths, env: dict[str, str]) -> None:
    header = '# Written by `feedlot local up`; load with: eval "$(feedlot local env)"\n'
    write_private(paths.env_file, header + export_lines(env))  # URLs and the API key inside


def parse_env_file(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            env[key] = value
    return env


def read_env_file(paths: StatePaths) -> dict[str, str] | None:
    try:
        return parse_env_file(paths.env_file.read_text())
    except FileNotFoundError:
        return None


# --- Dagster's home ------------------------------------------------------------------------------


def dagster_yaml() -> str:
    for candidate in (Path.cwd() / "dagster.yaml", Path(__file__).parents[2] / "dagster.yaml"):
        if candidate.is_file():
            return candidate.read_text()
    return FALLBACK_DAGSTER_YAML


def write_dagster_home(paths: StatePaths) -> Path:
    """``<state>/dagster_home/dagster.yaml`` (storage URL from the environment, never inline)."""
    home = private_dir(paths.dagster_home)
    target = home / "dagster.yaml"
    text = dagster_yaml()
    if not target.exists() or target.read_text() != text:
        write_private(target, text)
    return home
