"""The warehouse as a Dagster resource (PostgreSQL or MySQL, chosen by the URL's dialect)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from feedlot_pipeline.warehouse.store import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy URL with the driver named, e.g. postgresql+psycopg://… or mysql+pymysql://…"""

    url: str

    @contextmanager
    def open(self) -> Iterator[Warehouse]:
        warehouse = Warehouse(self.url)
        try:
            yield warehouse
        finally:
            warehouse.dispose()
