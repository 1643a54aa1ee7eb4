"""``feedlot db …`` (schema migrations) and ``feedlot clients …`` (cod_cliente → fazenda)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.warehouse.store import WarehouseConfigError

URL_HELP = "Warehouse SQLAlchemy URL (postgresql+psycopg://… or mysql+pymysql://…). "
URL_HELP += "Default: FEEDLOT_WAREHOUSE_URL."


def resolve_url(url: str | None) -> str:
    """The --url given, else FEEDLOT_WAREHOUSE_URL, else a usage error that says what to set."""
    url = url or Settings().warehouse_url_value()
    if not url:
        raise click.UsageError(
            "no warehouse URL: pass --url or set FEEDLOT_WAREHOUSE_URL, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/feedlot"
        )
    return url


def shown(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<unparseable URL>"


@contextmanager
def friendly_errors(url: str) -> Iterator[None]:
    """Turn configuration and connection errors into one-line messages instead of tracebacks."""
    import sqlalchemy.exc

    try:
        yield
    except WarehouseConfigError as err:
        raise click.ClickException(str(err)) from None
    except sqlalchemy.exc.OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise click.ClickException(f"cannot reach the warehouse {shown(url)}: {reason}") from None


def url_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", default=None, metavar="URL", help=URL_HELP)(func)


# --- feedlot db --------------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Warehouse schema migrations (Alembic, PostgreSQL or MySQL/MariaDB)."""


@db.command()
@url_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(url: str | None, revision: str) -> None:
    """Create or migrate the warehouse tables (idempotent)."""
    from feedlot_pipeline.warehouse import schema

    url = resolve_url(url)
    with friendly_errors(url):
        schema.upgrade(url, revision)
        now = schema.current(url)
    click.echo(f"warehouse {shown(url)} is at revision {now}")


@db.command()
@url_option
def current(url: str | None) -> None:
    """Show the warehouse's revision and whether it is the newest."""
    from feedlot_pipeline.warehouse import schema

    url = resolve_url(url)
    with friendly_errors(url):
        revision = schema.current(url)
    head = schema.head()
    if revision is None:
        click.echo(f"not migrated (head is {head}): run 'feedlot db upgrade'")
    elif revision == head:
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision} (head is {head}): run 'feedlot db upgrade'")


# --- feedlot clients ---------------------------------------------------------------------------


@click.group()
def clients() -> None:
    """Client (cod_cliente) → farm (fazenda) reference data used to route every record."""


@clients.command("add")
@click.argument("cod_cliente")
@click.argument("fazenda")
@click.option("--replace", is_flag=True, help="Move a client that already maps to another farm.")
@url_option
def add(cod_cliente: str, fazenda: str, replace: bool, url: str | None) -> None:
    """Map COD_CLIENTE to FAZENDA (lower-case letters, digits and _)."""
    from feedlot_pipeline.warehouse.store import Warehouse

    url = resolve_url(url)
    with friendly_errors(url):
        warehouse = Warehouse(url)
        try:
            outcome = warehouse.add_client(cod_cliente, fazenda, replace=replace)
            clients_now = warehouse.clients()
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        finally:
            warehouse.dispose()
    click.echo(f"{outcome}: {cod_cliente.strip()} → {fazenda}")
    _publish_client_map(clients_now)


def _publish_client_map(clients: dict[str, str]) -> None:
    """The landing Lambdas route with the map in the lake: publish it now (client_map_sensor
    would within a minute). A lake that cannot be reached is a warning, not a failure."""
    from feedlot_pipeline.core import client_map
    from feedlot_pipeline.core.settings import Settings

    bucket = Settings().lake_bucket
    try:
        client_map.publish(bucket, clients)
    except Exception as err:  # noqa: BLE001 - reported, the warehouse change stands
        click.echo(
            f"warning: could not publish the client map to s3://{bucket}/{client_map.KEY} "
            f"({type(err).__name__}: {err}); client_map_sensor will publish it",
            err=True,
        )
        return
    click.echo(f"published the client map ({len(clients)} clients) to s3://{bucket}")


@clients.command("list")
@url_option
def list_clients(url: str | None) -> None:
    """Print every cod_cliente and its fazenda."""
    from feedlot_pipeline.warehouse.store import Warehouse

    url = resolve_url(url)
    with friendly_errors(url):
        warehouse = Warehouse(url)
        try:
            mapping = warehouse.clients()
        finally:
            warehouse.dispose()
    if not mapping:
        click.echo("no clients")
        return
    width = max(len(cod) for cod in mapping)
    for cod, fazenda in sorted(mapping.items()):
        click.echo(f"{cod:<{width}}  {fazenda}")
