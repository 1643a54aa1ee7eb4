"""Alembic environment of the warehouse.

Normally run through ``feedlot_pipeline.warehouse.schema.upgrade(url)``, which hands over an open
connection. Run by the ``alembic`` command (``alembic -c feedlot_pipeline/warehouse/migrations/
alembic.ini …``), the URL comes from ``-x url=…`` or FEEDLOT_WAREHOUSE_URL.
"""

from __future__ import annotations

from alembic import context

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.warehouse.schema import VERSION_TABLE

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or Settings().warehouse_url_value()
    if not url:
        raise RuntimeError("no warehouse URL: pass -x url=… or set FEEDLOT_WAREHOUSE_URL")
    return url


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
        return
    from feedlot_pipeline.warehouse.engine import create_warehouse_engine

    engine = create_warehouse_engine(_url())
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, version_table=VERSION_TABLE)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
