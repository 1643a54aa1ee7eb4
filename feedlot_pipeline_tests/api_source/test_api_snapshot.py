"""api_snapshot materialized against local HTTP servers and the moto lake bucket.

Every failure case checks the two promises together: the run fails with the cause in its message,
and nothing (not even an unfinished multipart upload) is left under api_snapshots/.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import dagster as dg
import pytest

from feedlot_pipeline.api_source.assets import SNAPSHOT_PREFIX, api_snapshot, snapshot_key
from feedlot_pipeline.api_source.resources import PublicApiResource, check_name
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline_tests.api_source.server import Reply, Seen, serve

FAST = {
    "timeout_seconds": 2.0,
    "max_retries": 3,
    "backoff_base_seconds": 0.01,
    "backoff_max_seconds": 0.05,
}


def items(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "nome": f"item {i}", "peso": 1.5 * i, "ativo": i % 2 == 0}
        | ({"obs": None} if i % 3 == 0 else {})
        for i in range(start, start + count)
    ]


def api(url: str, **fields: Any) -> PublicApiResource:
    return PublicApiResource(**{"name": "test_api", "url": url, **FAST, **fields})


def materialize(settings: Settings, resource: PublicApiResource) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [api_snapshot],
        resources={"public_api": resource, "lake": LakeResource(bucket=settings.lake_bucket)},
        raise_on_error=False,
    )


def landed(settings: Settings) -> list[str]:
    s3 = client("s3")
    found = s3.list_objects_v2(Bucket=settings.lake_bucket, Prefix=f"{SNAPSHOT_PREFIX}/")
    uploads = s3.list_multipart_uploads(Bucket=settings.lake_bucket).get("Uploads", [])
    assert uploads == [], "an unfinished multipart upload was left behind"
    return [item["Key"] for item in found.get("Contents", [])]


def lines(settings: Settings, key: str) -> list[Any]:
    body = client("s3").get_object(Bucket=settings.lake_bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Everything a person sees about a failed run: messages, errors, failure descriptions."""
    parts: list[str] = []
    for event in result.all_events:
        parts.append(event.message or "")
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if error is not None:
            parts.append(error.to_string())
        user = getattr(data, "user_failure_data", None)
        if user is not None:
            parts.append(f"{user.description} {user.metadata}")
    return "\n".join(parts)


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (mat,) = result.asset_materializations_for_node("api_snapshot")
    return {k: v.value for k, v in mat.metadata.items()}


def test_page_number_pagination_lands_every_record_once(aws: tuple) -> None:
    settings, _ = aws

    def pages(req: Seen, n: int) -> Reply:
        page = int(req.query["page"])
        return Reply(body={"data": items((page - 1) * 4, 4) if page <= 3 else []})

    with serve(pages) as server:
        result = materialize(
            settings, api(f"{server.url}/v1/items", pagination="page", records_path="data")
        )
    assert result.success, failure_text(result)
    assert [s.query["page"] for s in server.seen] == ["1", "2", "3", "4"]
    (key,) = landed(settings)
    assert key.startswith(f"{SNAPSHOT_PREFIX}/test_api/") and key.endswith(".jsonl")
    _, _, yyyy, mm, dd, filename = key.split("/")
    assert filename.startswith(f"test_api-{yyyy}{mm}{dd}T")  # folders = the fetch's UTC day
    rows = lines(settings, key)
    assert rows == items(0, 12)

    meta = metadata(result)
    assert meta["dagster/row_count"] == 12
    assert meta["pages"] == 4
    assert meta["s3_key"] == key
    assert meta["bytes"] > 0 and meta["elapsed_seconds"] >= 0
    assert meta["schema"] == {
        "ativo": ["boolean"],
        "id": ["integer"],
        "nome": ["string"],
        "obs": ["null"],
        "peso": ["number"],
    }
    assert "| obs | null | 4/12 |" in meta["schema_table"]
    head = client("s3").head_object(Bucket=settings.lake_bucket, Key=key)
    assert head["Metadata"]["records"] == "12"
    assert head["Metadata"]["pages"] == "4"
    assert head["Metadata"]["source-url"] == f"{server.url}/v1/items"


def test_key_layout_is_dated_by_the_fetch_day_in_utc() -> None:
    from datetime import datetime, timedelta, timezone

    brt = timezone(timedelta(hours=-3))
    fetched = datetime(2024, 3, 18, 22, 30, 5, 123456, tzinfo=brt)  # already the 19th in UTC
    assert snapshot_key("publicapis", fetched) == (
        "api_snapshots/publicapis/2024/03/19/publicapis-20240319T013005.123456Z.jsonl"
    )


def test_next_link_pagination_follows_relative_and_absolute_links(aws: tuple) -> None:
    settings, _ = aws

    def linked(req: Seen, n: int) -> Reply:
        cursor = req.query.get("cursor", "a")
        nxt = {"a": "/v1/items?cursor=b", "b": f"{base}/v1/items?cursor=c", "c": None}[cursor]
        start = "abc".index(cursor) * 3
        return Reply(body={"results": items(start, 3), "paging": {"next": nxt}})

    with serve(linked) as server:
        base = server.url
        result = materialize(
            settings,
            api(
                f"{server.url}/v1/items",
                pagination="next_link",
                next_path="paging.next",
                records_path="results",
            ),
        )
    assert result.success, failure_text(result)
    assert [s.query.get("cursor") for s in server.seen] == [None, "b", "c"]
    (key,) = landed(settings)
    assert lines(settings, key) == items(0, 9)
    assert metadata(result)["pages"] == 3


def test_a_server_failing_every_other_request_still_lands_exactly_once(aws: tuple) -> None:
    settings, _ = aws

    def flaky(req: Seen, n: int) -> Reply:
        if n % 2 == 1:  # requests 1, 3, 5, ... fail; 500 and 503 in turn
            return Reply(status=500 if n % 4 == 1 else 503, body={"error": "try later"})
        page = int(req.query["page"])
        return Reply(body=items((page - 1) * 5, 5) if page <= 3 else [])

    with serve(flaky) as server:
        result = materialize(settings, api(server.url, pagination="page"))
    assert result.success, failure_text(result)
    assert len(server.seen) == 8  # 4 pages, each failed once first
    (key,) = landed(settings)
    rows = lines(settings, key)
    assert len(rows) == 15 and [r["id"] for r in rows] == list(range(15))
    assert metadata(result)["dagster/row_count"] == 15
    assert metadata(result)["requests"] == 8


def test_retry_after_on_429_is_honoured(aws: tuple) -> None:
    settings, _ = aws

    def limited(req: Seen, n: int) -> Reply:
        if n == 1:
            return Reply(status=429, body={"error": "slow down"}, headers={"Retry-After": "0"})
        return Reply(body=items(0, 2))

    with serve(limited) as server:
        result = materialize(settings, api(server.url))
    assert result.success, failure_text(result)
    assert len(server.seen) == 2
    assert len(lines(settings, landed(settings)[0])) == 2


def test_a_server_always_failing_fails_the_run_and_lands_nothing(aws: tuple) -> None:
    settings, _ = aws

    def broken(req: Seen, n: int) -> Reply:
        page = int(req.query["page"])
        if page == 1:
            return Reply(body=items(0, 3))  # the first page works: nothing partial may land
        return Reply(status=500, body={"error": "database on fire"})

    with serve(broken) as server:
        result = materialize(
            settings, api(f"{server.url}/v1?api_key=querysecret", pagination="page")
        )
    assert not result.success
    text = failure_text(result)
    assert "HTTP 500" in text and "after 4 attempts" in text and "database on fire" in text
    assert "querysecret" not in text
    assert len(server.seen) == 1 + 4
    assert landed(settings) == []


def test_wrong_key_401_fails_fast_without_retries(aws: tuple) -> None:
    settings, _ = aws

    def guarded(req: Seen, n: int) -> Reply:
        if req.header("X-Api-Key") != "right-key":
            # A careless API echoing the credential: it must not reach the run's messages.
            return Reply(status=401, body={"error": "bad key", "got": req.header("X-Api-Key")})
        return Reply(body=items(0, 1))

    with serve(guarded) as server:
        result = materialize(
            settings, api(server.url, auth_header="X-Api-Key", auth_value="wrong-key-0123")
        )
    assert not result.success
    text = failure_text(result)
    assert "HTTP 401" in text and "not retried" in text
    assert "wrong-key-0123" not in text
    assert len(server.seen) == 1
    assert landed(settings) == []


def test_auth_value_from_an_ssm_securestring_reaches_the_server(aws: tuple) -> None:
    settings, _ = aws
    secret = f"ssm-{uuid.uuid4().hex}"
    parameter = f"/feedlot/test/{uuid.uuid4().hex[:8]}/api-token"
    client("ssm").put_parameter(Name=parameter, Value=secret, Type="SecureString")

    def bearer(req: Seen, n: int) -> Reply:
        if req.header("Authorization") != f"Bearer {secret}":
            return Reply(status=403, body={"error": "forbidden"})
        return Reply(body=items(0, 4))  # the body itself is the list of records

    with serve(bearer) as server:
        result = materialize(
            settings,
            api(
                server.url,
                auth_header="Authorization",
                auth_prefix="Bearer ",
                auth_ssm_parameter=parameter,
            ),
        )
    assert result.success, failure_text(result)
    assert server.seen[0].header("Authorization") == f"Bearer {secret}"
    assert secret not in failure_text(result)  # nor in any log line or metadata
    assert secret not in " ".join(str(value) for value in metadata(result).values())
    assert len(lines(settings, landed(settings)[0])) == 4


def test_a_missing_ssm_parameter_fails_with_its_name(aws: tuple) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body=[])) as server:
        result = materialize(
            settings,
            api(server.url, auth_header="X-Api-Key", auth_ssm_parameter="/feedlot/test/absent"),
        )
    assert not result.success
    assert "/feedlot/test/absent" in failure_text(result)
    assert server.seen == [] and landed(settings) == []


def test_a_slow_server_is_retried_then_fails_with_timed_out(aws: tuple) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body=items(0, 1), delay=1.0)) as server:
        result = materialize(settings, api(server.url, timeout_seconds=0.2, max_retries=2))
    assert not result.success
    text = failure_text(result)
    assert "timed out" in text and "after 3 attempts" in text
    assert len(server.seen) == 3
    assert landed(settings) == []


def test_credentials_do_not_follow_a_redirect_to_another_origin(aws: tuple) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body=items(0, 2))) as elsewhere:

        def redirect(req: Seen, n: int) -> Reply:
            return Reply(status=302, body={}, headers={"Location": f"{elsewhere.url}/moved"})

        with serve(redirect) as origin:
            result = materialize(
                settings, api(origin.url, auth_header="X-Api-Key", auth_value="k-123")
            )
    assert result.success, failure_text(result)
    assert origin.seen[0].header("X-Api-Key") == "k-123"
    assert elsewhere.seen[0].header("X-Api-Key") is None


def test_a_next_link_to_another_origin_is_refused(aws: tuple) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body={"results": [], "next": None})) as elsewhere:
        body = {"results": items(0, 2), "next": f"{elsewhere.url}/steal"}
        with serve(lambda req, n: Reply(body=body)) as origin:
            result = materialize(
                settings,
                api(
                    origin.url,
                    pagination="next_link",
                    records_path="results",
                    auth_header="X-Api-Key",
                    auth_value="k-123",
                ),
            )
    assert not result.success
    assert "leaves the configured origin" in failure_text(result)
    assert elsewhere.seen == [] and landed(settings) == []


def test_more_pages_than_max_pages_fails_instead_of_landing_a_truncated_snapshot(
    aws: tuple,
) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body=items(n, 1))) as server:
        result = materialize(settings, api(server.url, pagination="page", max_pages=3))
    assert not result.success
    assert "max_pages=3" in failure_text(result)
    assert len(server.seen) == 3 and landed(settings) == []


def test_a_body_without_the_records_list_fails_with_its_keys(aws: tuple) -> None:
    settings, _ = aws
    with serve(lambda req, n: Reply(body={"entries": items(0, 2), "count": 2})) as server:
        result = materialize(settings, api(server.url, records_path="data"))
    assert not result.success
    assert "no list of records at 'data'" in failure_text(result)
    assert "['count', 'entries']" in failure_text(result)
    assert landed(settings) == []


@pytest.mark.parametrize(
    "name", ["", "..", ".", "../lake", "a/b", "/abs", "a\\b", "x y", "nome.json", "é", "a" * 65]
)
def test_hostile_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)
    with pytest.raises(Exception, match="invalid API name"):
        PublicApiResource(name=name, url="http://127.0.0.1/x")


def test_a_hostile_name_from_the_environment_fails_the_run_and_lands_nothing(
    aws: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _ = aws
    monkeypatch.setenv("T_API_NAME", "../historico_diario")
    with serve(lambda req, n: Reply(body=items(0, 1))) as server:
        result = materialize(
            settings, PublicApiResource(name=dg.EnvVar("T_API_NAME"), url=server.url)
        )
    assert not result.success
    assert "invalid API name" in failure_text(result)
    assert server.seen == []
    assert client("s3").list_objects_v2(Bucket=settings.lake_bucket).get("KeyCount") == 0
