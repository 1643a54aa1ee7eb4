"""The local stack's databases: the warehouse and Dagster's storage, configured or embedded.

``FEEDLOT_WAREHOUSE_URL`` names the warehouse (PostgreSQL or MySQL); without it an embedded
PostgreSQL (``<state>/postgres/data``) holds database ``feedlot``. Dagster's storage is
``FEEDLOT_DAGSTER_STORAGE_URL``, else database ``<warehouse database>_dagster`` beside a PostgreSQL
warehouse (two stacks sharing a server never share run storage), else database ``dagster`` on
the embedded server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.local.services import (
    LOOPBACK,
    EmbeddedPostgres,
    ServiceError,
    check_database_name,
    ensure_database,
)
from feedlot_pipeline.local.state import StatePaths, private_dir, read_record, write_record
from feedlot_pipeline.local.supervisor import ServiceInfo, port_taken

WAREHOUSE_DB = "feedlot"
EMBEDDED_DAGSTER_DB = "dagster"  # on the stack's own server, beside ``feedlot``
DAGSTER_SUFFIX = "_dagster"


@dataclass(frozen=True)
class PgPlan:
    """Which URLs the user configured; an empty one is derived from the (embedded) server."""

    warehouse_url: str
    dagster_url: str

    @property
    def embedded(self) -> bool:
        """An embedded server is needed for the warehouse, or for a non-PostgreSQL one's Dagster."""
        if not self.warehouse_url:
            return True
        return not self.dagster_url and not self.warehouse_url.startswith("postgresql")


def pg_plan(paths: StatePaths, settings: Settings | None = None) -> PgPlan:
    """Configured URLs, ignoring the ones this stack derived itself last time.

    A shell that evaluated ``feedlot local env`` carries our own URLs; they must not turn the
    embedded server into an "external" one that is not running after ``down``.
    """
    s = settings or Settings()
    derived = (read_record(paths.record("postgres")) or {}).get("derived", {})
    configured = {
        "FEEDLOT_WAREHOUSE_URL": s.warehouse_url_value() or "",
        "FEEDLOT_DAGSTER_STORAGE_URL": (
            s.dagster_storage_url.get_secret_value() if s.dagster_storage_url else ""
        ),
    }
    urls = {k: "" if v and v == derived.get(k) else v for k, v in configured.items()}
    return PgPlan(urls["FEEDLOT_WAREHOUSE_URL"], urls["FEEDLOT_DAGSTER_STORAGE_URL"])


def dagster_database(warehouse_url: str) -> str:
    """Dagster's default database beside a PostgreSQL warehouse: ``<warehouse db>_dagster``."""
    from sqlalchemy.engine import make_url

    name = f"{make_url(warehouse_url).database or WAREHOUSE_DB}{DAGSTER_SUFFIX}"
    return check_database_name(
        name, "FEEDLOT_WAREHOUSE_URL's database + _dagster; or set FEEDLOT_DAGSTER_STORAGE_URL"
    )


def check_answers(url: str, variable: str, create_missing: bool = True) -> None:
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
    create_database(url, parsed.database or WAREHOUSE_DB, variable)


def create_database(server_url: str, name: str, variable: str) -> str:
    """``ensure_database`` with an error that says what to set when it cannot create one."""
    check_database_name(name, variable)
    try:
        return ensure_database(server_url, name)
    except Exception as err:  # noqa: BLE001 - driver errors vary; the message is what matters
        lines = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ServiceError(
            f"cannot create database {name!r} on the server of {variable}: "
            f"{lines[0] if lines else type(err).__name__}; create it or set {variable}"
        ) from None


def psycopg2_url(url: str) -> str:
    """Dagster's storage uses psycopg2: the plain postgresql:// scheme (SQLAlchemy < 2.1)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_log(paths: StatePaths) -> Path:
    """The embedded server's log, beside its data dir: the server's own user writes it, so
    ``logs/`` stays closed to every other user."""
    return paths.pg_data.parent / "postgres.log"


def pg_lock_port(paths: StatePaths) -> int | None:
    """Port of the embedded server from postmaster.pid (line 4), if it has one."""
    try:
        return int((paths.pg_data / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


def check_embedded_port(paths: StatePaths, pg_port: int) -> None:
    """Fail before anything starts when the embedded server's port is someone else's."""
    from feedlot_pipeline.local.services import port_open

    ours = pg_lock_port(paths) == pg_port and EmbeddedPostgres(paths.pg_data, pg_port).running()
    if not ours and port_open(pg_port):
        raise port_taken(pg_port, "FEEDLOT_PG_PORT", "embedded PostgreSQL")


def start_postgres(
    paths: StatePaths, plan: PgPlan, pg_port: int
) -> tuple[list[ServiceInfo], str, str]:
    """Check or start the PostgreSQL(s); return their info, the warehouse and Dagster URLs.

    The embedded server's info says ``started`` when this call started it (so a failing ``up``
    stops it again), ``restarted`` when it ran on another port before, ``reused`` otherwise.
    """
    from sqlalchemy.engine import make_url

    services: list[ServiceInfo] = []
    warehouse_url, dagster_url = plan.warehouse_url, plan.dagster_url
    if warehouse_url:
        check_answers(warehouse_url, "FEEDLOT_WAREHOUSE_URL")
        parsed = make_url(warehouse_url)
        address = f"{parsed.host}:{parsed.port or ''}".rstrip(":")
        shown = parsed.render_as_string(hide_password=True)
        services.append(ServiceInfo("warehouse", address, None, True, "external", None, shown))
    derived: dict[str, str] = {}
    if dagster_url:
        check_answers(dagster_url, "FEEDLOT_DAGSTER_STORAGE_URL")
    elif warehouse_url and not plan.embedded:  # a PostgreSQL warehouse also holds Dagster's
        name = dagster_database(warehouse_url)
        created = create_database(warehouse_url, name, "FEEDLOT_DAGSTER_STORAGE_URL")
        dagster_url = psycopg2_url(created)
        derived["FEEDLOT_DAGSTER_STORAGE_URL"] = dagster_url

    record: dict = {"mode": "external"}
    if plan.embedded:
        log = pg_log(paths)
        state = "reused"
        previous = pg_lock_port(paths)
        if previous and previous != pg_port and EmbeddedPostgres(paths.pg_data, previous).running():
            EmbeddedPostgres(paths.pg_data, previous).stop()  # FEEDLOT_PG_PORT changed
            state = "restarted"
        server = EmbeddedPostgres(paths.pg_data, pg_port, log)
        private_dir(paths.pg_data.parent)
        if not server.running():
            server.start()
            state = "started" if state == "reused" else state
        services.append(
            ServiceInfo(
                "postgres", f"{LOOPBACK}:{pg_port}", server.pid(), True, state, log, "embedded"
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
            dagster_url = psycopg2_url(ensure_database(server.url, EMBEDDED_DAGSTER_DB))
            derived["FEEDLOT_DAGSTER_STORAGE_URL"] = dagster_url
    record |= {"warehouse_url": warehouse_url, "dagster_url": dagster_url, "derived": derived}
    write_record(paths.record("postgres"), record)  # 0600: the URLs may carry passwords
    return services, warehouse_url, dagster_url


def stop_embedded(paths: StatePaths) -> ServiceInfo | None:
    """Stop the embedded server by its data dir, whatever the record says."""
    server = EmbeddedPostgres(paths.pg_data, pg_lock_port(paths) or 0)
    if (paths.pg_data / "postmaster.pid").exists():
        pid = server.pid()
        server.stop()
        return ServiceInfo("postgres", f"{LOOPBACK}:{server.port}", pid, False, "stopped")
    if paths.pg_data.exists():
        return ServiceInfo("postgres", "embedded", None, False, "not running")
    return None


def migrate(warehouse_url: str) -> None:
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


def status_lines(paths: StatePaths) -> list[ServiceInfo]:
    """The warehouse / postgres lines of ``feedlot local status``."""
    pg = read_record(paths.record("postgres"))
    if pg is None:
        return []
    services: list[ServiceInfo] = []
    if "FEEDLOT_WAREHOUSE_URL" not in pg.get("derived", {}):
        try:
            check_answers(pg["warehouse_url"], "FEEDLOT_WAREHOUSE_URL", create_missing=False)
            alive, detail = True, "external"
        except ServiceError as err:
            alive, detail = False, str(err)
        state = "external" if alive else "down"
        services.append(ServiceInfo("warehouse", "external", None, alive, state, None, detail))
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
                pg_log(paths),
                "embedded",
            )
        )
    return services
