"""lambdas.common: the client map's cache and its fallback, the warehouse URL from a secret."""

from __future__ import annotations

import json
import uuid

import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.lambdas import common, sns_handler
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import CLIENTS, Context, record, sns_event

# Nothing listens on port 1: connecting fails at once.
DEAD_WAREHOUSE = "postgresql+psycopg://feedlot:x@127.0.0.1:1/feedlot"


@pytest.fixture()
def always_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call refreshes the map (no TTL, no retry delay)."""
    monkeypatch.setattr(common, "CLIENT_MAP_TTL_SECONDS", 0.0)
    monkeypatch.setattr(common, "CLIENT_MAP_RETRY_SECONDS", 0.0)


def test_the_published_map_comes_first_and_needs_no_warehouse(aws, monkeypatch) -> None:
    from feedlot_pipeline.core import client_map as published

    settings, _ = aws
    published.publish(settings.lake_bucket, {"FazendaUm": "fazenda_um", "Nova": "fazenda_nova"})
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", DEAD_WAREHOUSE)  # never reached
    assert common.client_map() == {"FazendaUm": "fazenda_um", "Nova": "fazenda_nova"}
    landed = sns_handler.handler(sns_event(json.dumps([record("Nova")]), "m1"), Context())
    assert [k.split("/")[1] for k in landed["landed"]] == ["fazenda_nova"]


def test_client_map_is_cached_for_its_ttl(aws, warehouse_url) -> None:
    assert common.client_map() == CLIENTS
    with Warehouse(warehouse_url) as wh:
        wh.add_client("FazendaTres", "fazenda_tres")
    assert common.client_map() == CLIENTS  # within the TTL: the cached map
    common.reset_client_map()
    assert common.client_map() == {**CLIENTS, "FazendaTres": "fazenda_tres"}


def test_client_map_keeps_the_last_good_map_when_its_source_fails(
    aws, warehouse_url, monkeypatch, always_refresh, caplog
) -> None:
    good = common.client_map()
    assert good == CLIENTS
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", DEAD_WAREHOUSE)
    caplog.clear()
    assert common.client_map() == good  # the refresh failed: the last good map
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == "client map refresh failed; using the last good map"
    # The source comes back with a new client: the next refresh picks it up.
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", warehouse_url)
    with Warehouse(warehouse_url) as wh:
        wh.add_client("FazendaTres", "fazenda_tres")
    assert common.client_map()["FazendaTres"] == "fazenda_tres"


def test_client_map_raises_when_there_never_was_one(aws, warehouse_url, monkeypatch) -> None:
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", DEAD_WAREHOUSE)
    with pytest.raises(common.ClientMapUnavailable, match="no earlier one"):
        common.client_map()
    with pytest.raises(common.ClientMapUnavailable):  # still none: tried again, raises again
        common.client_map()
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL")
    with pytest.raises(common.ClientMapUnavailable, match="FEEDLOT_WAREHOUSE_SECRET"):
        common.client_map()
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", warehouse_url)
    assert common.client_map() == CLIENTS  # and recovers once the source answers


def test_landing_goes_on_with_the_stale_map_while_the_warehouse_is_down(
    aws, warehouse_url, monkeypatch, always_refresh
) -> None:
    first = sns_handler.handler(sns_event(json.dumps([record()]), "m1"), Context())
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", DEAD_WAREHOUSE)
    second = sns_handler.handler(sns_event(json.dumps([record()]), "m2"), Context())
    assert [k.split("/")[1] for k in first["landed"] + second["landed"]] == ["fazenda_um"] * 2


@pytest.mark.parametrize("as_json", [True, False])
def test_warehouse_url_from_the_secret(aws, warehouse_url, monkeypatch, as_json) -> None:
    name = f"t{uuid.uuid4().hex[:8]}/warehouse"
    text = json.dumps({"url": warehouse_url}) if as_json else f"{warehouse_url}\n"
    arn = client("secretsmanager").create_secret(Name=name, SecretString=text)["ARN"]
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL")
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", arn)
    assert common.warehouse_url(common.settings()) == warehouse_url
    assert common.client_map() == CLIENTS


def test_warehouse_secret_without_the_key_is_a_clear_error(aws, monkeypatch) -> None:
    name = f"t{uuid.uuid4().hex[:8]}/warehouse"
    client("secretsmanager").create_secret(Name=name, SecretString='{"dsn": "x"}')
    monkeypatch.delenv("FEEDLOT_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET", name)
    with pytest.raises(common.ClientMapUnavailable, match="without a string under 'url'"):
        common.warehouse_url(common.settings())
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_SECRET_KEY", "dsn")
    assert common.warehouse_url(common.settings()) == "x"


def test_a_client_added_since_the_map_was_read_is_routed_at_once(aws, monkeypatch) -> None:
    """Within the TTL a record of a client the cached map lacks re-reads the map (at most every
    CLIENT_MAP_MISS_REFRESH_SECONDS) instead of landing in _unrouted."""
    from feedlot_pipeline.core import client_map as published

    settings, _ = aws
    published.publish(settings.lake_bucket, {"FazendaUm": "fazenda_um"})
    assert dict(common.client_map()) == {"FazendaUm": "fazenda_um"}  # cached for a minute
    published.publish(settings.lake_bucket, {"FazendaUm": "fazenda_um", "Nova": "fazenda_nova"})
    landed = sns_handler.handler(sns_event(json.dumps([record("Nova")]), "m-new"), Context())
    assert [k.split("/")[1] for k in landed["landed"]] == ["fazenda_nova"]

    # A client nobody added: one re-read, then the cached map until the interval has passed.
    assert common._client_map.miss_at > 0  # the re-read above started an interval
    common._client_map.miss_at = 0.0  # as if it had passed
    reads = []
    real = common._read_client_map
    monkeypatch.setattr(common, "_read_client_map", lambda: reads.append(1) or real())
    for i in range(3):
        sns_handler.handler(sns_event(json.dumps([record("Ninguem")]), f"m-x{i}"), Context())
    assert len(reads) == 1


def test_settings_are_built_once_per_environment(monkeypatch) -> None:
    """A warm function reuses its settings; a changed variable gives settings that show it."""
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "lake-one")
    first = common.settings()
    assert common.settings() is first and first.lake_bucket == "lake-one"
    monkeypatch.setenv("FEEDLOT_LAKE_BUCKET", "lake-two")
    assert common.settings().lake_bucket == "lake-two"
    monkeypatch.setenv("FEEDLOT_METRICS_NAMESPACE", "Other/Namespace")
    assert common.observability_settings().metrics_namespace == "Other/Namespace"
