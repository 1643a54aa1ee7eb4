"""Connections to the warehouse: its URL (setting or secret), the supported drivers, engines in UTC.

Kept apart from the tables (``schema``) and the load code (``store``) so migrations and tools can
connect without importing either.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from feedlot_pipeline.core.settings import Settings


class WarehouseConfigError(RuntimeError):
    """The warehouse URL is missing or names an unsupported database or driver."""


def normalize_url(url: str) -> sa.URL:
    """The URL with the supported driver named; a clear error for anything else.

    A bare ``postgresql://`` or ``mysql://`` gets psycopg 3 / PyMySQL (SQLAlchemy would pick
    psycopg2 / mysqlclient); other drivers are refused because the load path uses psycopg 3's
    COPY API.
    """
    try:
        parsed = make_url(url)
    except Exception as err:  # noqa: BLE001 - re-raised with the reason
        raise WarehouseConfigError(f"invalid warehouse URL: {err}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise WarehouseConfigError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql+psycopg://…"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend in ("mysql", "mariadb"):
        if driver not in ("", "pymysql"):
            raise WarehouseConfigError(
                f"unsupported MySQL driver {driver!r}: use mysql+pymysql://…"
            )
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return parsed.set(drivername="mysql+pymysql")
    raise WarehouseConfigError(
        f"unsupported warehouse database {backend!r}: use postgresql+psycopg:// or mysql+pymysql://"
    )


def create_warehouse_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An Engine whose sessions run in UTC, so timestamps mean the same on both databases."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, pool_pre_ping=True, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _session(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                # The staging table of a 25k-row chunk fits in memory (default is 8 MB).
                cur.execute("SET temp_buffers = '64MB'")
            dbapi_connection.commit()

        return engine
    connect_args = {"init_command": "SET time_zone = '+00:00'", **kwargs.pop("connect_args", {})}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def url_from_secret() -> str | None:
    """FEEDLOT_WAREHOUSE_SECRET's URL; None when no secret is configured."""
    settings = Settings()
    secret = settings.warehouse_secret
    if not secret:
        return None
    from feedlot_pipeline.core.aws import client

    try:
        text = client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"]
    except Exception as err:  # noqa: BLE001 - re-raised with what to check
        raise WarehouseConfigError(
            f"cannot read the warehouse secret {secret!r} (FEEDLOT_WAREHOUSE_SECRET): {err}"
        ) from None
    key = settings.warehouse_secret_key
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text).get(key)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise WarehouseConfigError(
                f"the warehouse secret {secret!r} is JSON without a string under {key!r} "
                "(FEEDLOT_WAREHOUSE_SECRET_KEY)"
            )
        return value
    return text.strip()


def resolve_url() -> str:
    """FEEDLOT_WAREHOUSE_URL, else the URL in the secret FEEDLOT_WAREHOUSE_SECRET; else an error
    that says what to set."""
    url = Settings().warehouse_url_value() or url_from_secret()
    if not url:
        raise WarehouseConfigError(
            "FEEDLOT_WAREHOUSE_URL is not set: the warehouse's SQLAlchemy URL with the driver "
            "named, e.g. postgresql+psycopg://user:pass@host:5432/db or mysql+pymysql://… "
            "(or FEEDLOT_WAREHOUSE_SECRET: a Secrets Manager secret holding it)"
        )
    return url


def shown(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparseable URL is shown as a placeholder
        return "<unparseable URL>"
