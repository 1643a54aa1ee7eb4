"""What the three landing Lambdas share: settings, the client map, secret reads, the wiring error.

- ``settings()``: the platform's settings (``core.settings.Settings``), built once per invocation
  (the local stack and the tests change the environment between invocations).
- ``client_map()``: cod_cliente → fazenda, the routing table ``land_records`` needs, read from
  the copy published in the lake (``core.client_map``; the warehouse only where none was ever
  published), so a warehouse outage never stops landing. The map is kept
  in memory for ``CLIENT_MAP_TTL_SECONDS``; when a refresh fails the last good map is served
  (with a warning) so landing does not fail because its source is down; only when there has
  never been a map does it raise.
- ``secret()``: a Secrets Manager value through Powertools ``parameters`` (cached), on the
  project's boto3 client (``core.aws.client``: standard retries, ``AWS_ENDPOINT_URL``).
- ``InvalidEvent``: the event is not what the function is wired to receive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from feedlot_pipeline.core import client_map as client_map_doc
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings

logger = Logger(service="feedlot-landing")

CLIENT_MAP_TTL_SECONDS = 60.0  # a client added in the warehouse routes within a minute
CLIENT_MAP_RETRY_SECONDS = 5.0  # after a failed refresh, serve the stale map this long
SECRET_MAX_AGE_SECONDS = 300  # Powertools' cache of a secret's value


class InvalidEvent(ValueError):
    """The Lambda event is not the event the function is wired to: a wiring error, not bad data."""


class ClientMapUnavailable(RuntimeError):
    """No client map could be read and there is no earlier one to fall back on."""


def settings() -> Settings:
    """The settings as the environment says now; build once per invocation."""
    return Settings()


# --- secrets -----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _secrets_provider(boto_client: Any) -> parameters.SecretsProvider:
    """One Powertools provider (and its cache) per boto3 client, i.e. per endpoint and identity."""
    return parameters.SecretsProvider(boto3_client=boto_client)


def secret(name: str) -> str:
    """The text of a Secrets Manager secret (name or ARN), cached ``SECRET_MAX_AGE_SECONDS``."""
    value = _secrets_provider(client("secretsmanager")).get(name, max_age=SECRET_MAX_AGE_SECONDS)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def warehouse_url(s: Settings) -> str:
    """FEEDLOT_WAREHOUSE_URL, else the URL held by the secret FEEDLOT_WAREHOUSE_SECRET (text, or
    JSON with the URL under FEEDLOT_WAREHOUSE_SECRET_KEY)."""
    url = s.warehouse_url_value()
    if url:
        return url
    if not s.warehouse_secret:
        raise ClientMapUnavailable(
            "no warehouse configured: set FEEDLOT_WAREHOUSE_URL or FEEDLOT_WAREHOUSE_SECRET"
        )
    text = secret(s.warehouse_secret).strip()
    if not text.startswith("{"):
        return text
    try:
        value = json.loads(text).get(s.warehouse_secret_key)
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ClientMapUnavailable(
            f"the warehouse secret {s.warehouse_secret!r} is JSON without a string under "
            f"{s.warehouse_secret_key!r} (FEEDLOT_WAREHOUSE_SECRET_KEY)"
        )
    return value


# --- the client map ----------------------------------------------------------------------------


def _read_client_map() -> dict[str, str]:
    """The client map from its source: the copy published in the lake (``core.client_map``),
    so landing never waits on the warehouse. Only on a stack where no map was ever published
    does it fall back to the warehouse's ``clientes`` table."""
    s = settings()
    published = client_map_doc.fetch(s.lake_bucket)
    if published is not None:
        return dict(published.clients)
    from feedlot_pipeline.warehouse.store import Warehouse  # a fresh stack only

    warehouse = Warehouse(warehouse_url(s))
    try:
        return warehouse.clients()
    finally:
        warehouse.dispose()


class _ClientMapCache:
    """The last good map and when to refresh it; one refresh at a time per process."""

    def __init__(self) -> None:
        self.map: dict[str, str] | None = None
        self.refresh_at = 0.0
        self.lock = threading.Lock()

    def get(self) -> Mapping[str, str]:
        current = self.map
        if current is not None and time.monotonic() < self.refresh_at:
            return current
        with self.lock:
            if self.map is not None and time.monotonic() < self.refresh_at:
                return self.map  # another thread refreshed it meanwhile
            try:
                fresh = _read_client_map()
            except Exception as err:
                if self.map is None:
                    raise ClientMapUnavailable(
                        f"cannot read the client map and there is no earlier one: {err}"
                    ) from err
                self.refresh_at = time.monotonic() + CLIENT_MAP_RETRY_SECONDS
                logger.warning(
                    "client map refresh failed; using the last good map",
                    extra={
                        "error": f"{type(err).__name__}: {err}",
                        "clients": len(self.map),
                        "retry_seconds": CLIENT_MAP_RETRY_SECONDS,
                    },
                )
                return self.map
            self.map = fresh
            self.refresh_at = time.monotonic() + CLIENT_MAP_TTL_SECONDS
            return fresh

    def reset(self) -> None:
        with self.lock:
            self.map = None
            self.refresh_at = 0.0


_client_map = _ClientMapCache()


def client_map() -> Mapping[str, str]:
    """cod_cliente → fazenda, refreshed every ``CLIENT_MAP_TTL_SECONDS`` per Lambda container.

    A failed refresh serves the last good map (logged) and retries after
    ``CLIENT_MAP_RETRY_SECONDS``; ``ClientMapUnavailable`` when there never was one.
    """
    return _client_map.get()


def reset_client_map() -> None:
    """Forget the cached map (tests; a process pointed at another warehouse)."""
    _client_map.reset()
