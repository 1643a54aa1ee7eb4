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
- ``landing_metrics(source)``: one invocation's metrics (records received / landed / rejected,
  landing latency, failures) through Powertools ``Metrics`` as CloudWatch Embedded Metric Format
  on stdout, which CloudWatch Logs turns into metrics in AWS Lambda (no PutMetricData call, no IAM
  grant, nothing added to the invocation's time). Outside the Lambda runtime nothing reads EMF
  from stdout, so there (the local stack) the same document is also sent with PutMetricData by a
  background thread (``core.emf.emf_mirror``; ``FEEDLOT_METRICS_EMF_MIRROR``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.utilities import parameters

from feedlot_pipeline.core import client_map as client_map_doc
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.emf import emf_mirror
from feedlot_pipeline.core.metric_registry import spec as metric_spec
from feedlot_pipeline.core.settings import ObservabilitySettings, Settings

logger = Logger(service="feedlot-landing")

CLIENT_MAP_TTL_SECONDS = 60.0  # a client added in the warehouse routes within a minute
# A record of a client the cached map lacks re-reads the map first (at most this often), so a
# client added since the last read is routed at once instead of landing in _unrouted.
CLIENT_MAP_MISS_REFRESH_SECONDS = 5.0
CLIENT_MAP_RETRY_SECONDS = 5.0  # after a failed refresh, serve the stale map this long
SECRET_MAX_AGE_SECONDS = 300  # Powertools' cache of a secret's value


class InvalidEvent(ValueError):
    """The Lambda event is not the event the function is wired to: a wiring error, not bad data."""


class ClientMapUnavailable(RuntimeError):
    """No client map could be read and there is no earlier one to fall back on."""


# Every variable Settings and ObservabilitySettings read starts so (core.settings).
_SETTINGS_PREFIXES = ("FEEDLOT_", "AWS_")


def _environment() -> tuple[tuple[str, str], ...]:
    """The variables settings are read from (the platform's and AWS's), as they are now."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_SETTINGS_PREFIXES)))


@lru_cache(maxsize=4)
def _settings_for(environment: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


@lru_cache(maxsize=4)
def _observability_for(environment: tuple[tuple[str, str], ...]) -> ObservabilitySettings:
    return ObservabilitySettings()


def settings() -> Settings:
    """The settings as the environment says now, built once per environment (validating them
    per invocation was a fifth of a landing's CPU: a warm Lambda's environment does not change,
    the local stack's tests change it and get new ones)."""
    return _settings_for(_environment())


def observability_settings() -> ObservabilitySettings:
    """``ObservabilitySettings`` as the environment says now, built once per environment."""
    return _observability_for(_environment())


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
        self.miss_at = 0.0
        self.lock = threading.Lock()

    def refresh_on_miss(self) -> dict[str, str] | None:
        """A fresh map for a lookup the cached one missed; None when one was read less than
        ``CLIENT_MAP_MISS_REFRESH_SECONDS`` ago or the read failed (the cached map stands)."""
        with self.lock:
            now = time.monotonic()
            if now < self.miss_at:
                return None
            self.miss_at = now + CLIENT_MAP_MISS_REFRESH_SECONDS
        try:
            fresh = _read_client_map()
        except Exception as err:  # noqa: BLE001 - the cached map stands, and the reason is logged
            logger.warning(
                "client map re-read for an unknown client failed; routing with the cached map",
                extra={"error": f"{type(err).__name__}: {err}"},
            )
            return None
        with self.lock:
            self.map = fresh
            self.refresh_at = time.monotonic() + CLIENT_MAP_TTL_SECONDS
        return fresh

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
            self.miss_at = 0.0


class _Routing(Mapping[str, str]):
    """The cached map as the landing code reads it: a client it lacks re-reads the map once."""

    def __init__(self, cache: _ClientMapCache, current: Mapping[str, str]) -> None:
        self._cache = cache
        self._current = current

    def __getitem__(self, key: str) -> str:
        try:
            return self._current[key]
        except KeyError:
            fresh = self._cache.refresh_on_miss()
            if fresh is None:
                raise
            self._current = fresh
            return fresh[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)


_client_map = _ClientMapCache()


def client_map() -> Mapping[str, str]:
    """cod_cliente → fazenda, refreshed every ``CLIENT_MAP_TTL_SECONDS`` per Lambda container.

    A failed refresh serves the last good map (logged) and retries after
    ``CLIENT_MAP_RETRY_SECONDS``; ``ClientMapUnavailable`` when there never was one. A client the
    map lacks re-reads it (at most every ``CLIENT_MAP_MISS_REFRESH_SECONDS``) before the record is
    routed to ``_unrouted``.
    """
    return _Routing(_client_map, _client_map.get())


def reset_client_map() -> None:
    """Forget the cached map (tests; a process pointed at another warehouse)."""
    _client_map.reset()


# --- metrics -----------------------------------------------------------------------------------


class LandingMetrics:
    """One invocation's metrics, dimension ``Source``; names from ``core.metric_registry.REGISTRY``.

    A Powertools ``Metrics`` over a provider of its own: Powertools keeps the metric set of every
    ``Metrics()`` built without a provider in class attributes shared by all instances, which the
    local stack (several handlers on threads of one process) would mix between invocations.
    """

    def __init__(self, source: str, settings: ObservabilitySettings | None = None) -> None:
        self.settings = settings or observability_settings()
        self.source = source
        provider = AmazonCloudWatchEMFProvider(namespace=self.settings.metrics_namespace)
        # Metric identity is namespace + Source: a service dimension that POWERTOOLS_SERVICE_NAME
        # may set would make every series another one than the dashboards and alarms read.
        provider.service = None
        self.metrics = Metrics(provider=provider)
        self.metrics.add_dimension(name="Source", value=source)
        self.started = time.time()

    def add(self, name: str, value: float) -> None:
        spec = metric_spec(name)
        self.metrics.add_metric(name=name, unit=spec.unit, value=value)

    def latency_since(self, moment: datetime | None) -> None:
        """LandingLatency from the event's own time (else this invocation's start) to now."""
        now = time.time()
        since = moment.timestamp() if moment is not None else self.started
        self.add("LandingLatency", max(0.0, (now - since) * 1000))

    def flush(self) -> dict | None:
        """Print the EMF line (and mirror it where nothing extracts EMF; then the document is
        returned); never raises."""
        try:
            if not self.metrics.provider.metric_set:
                return None
            mirror = self.settings.metrics_enabled and self.settings.emf_mirror_on()
            document = self.metrics.serialize_metric_set() if mirror else None
            self.metrics.flush_metrics()  # the EMF line on stdout
            if document is not None:
                emf_mirror.submit(document, self.settings)
            return document
        except Exception as err:  # noqa: BLE001 - metrics never fail a landing
            logger.warning("metrics dropped", extra={"error": f"{type(err).__name__}: {err}"})
            return None


@contextmanager
def landing_metrics(source: str) -> Iterator[LandingMetrics]:
    """Metrics of one invocation, flushed at its end; an exception counts in LandingFailures."""
    emitted = LandingMetrics(source)
    try:
        yield emitted
    except Exception:
        emitted.add("LandingFailures", 1)
        raise
    finally:
        emitted.flush()


def event_time(text: Any) -> datetime | None:
    """An event's ISO 8601 time (``2024-03-18T12:00:00.000Z``) as UTC, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
