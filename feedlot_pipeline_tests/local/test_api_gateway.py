"""The local API Gateway stage: proxy events, the API key, limits, and hostile input end to end.

The gateway runs in-process on a free port in front of the real API handler, against the moto
session server and a fresh PostgreSQL warehouse; landed partitions are then loaded with the
asset's own PartitionLoader, so every hostile input is followed to its final warehouse outcome.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.contracts import LandingNotice
from feedlot_pipeline.lambdas import common
from feedlot_pipeline.local.api_gateway import ApiGateway, resolve_api_key
from feedlot_pipeline.local.services import LOOPBACK, ServiceError, port_open
from feedlot_pipeline.warehouse.store import Warehouse
from feedlot_pipeline_tests.helpers import (
    hostile_requests,
    load_noticed_partitions,
    receive_all,
    record,
)

EVENTS: list[dict] = []


def echo_handler(event: dict, context: Any) -> dict:
    """Records the proxy event and answers with a custom status, headers and body."""
    EVENTS.append(event)
    return {
        "statusCode": 299,
        "headers": {"x-echo": "1"},
        "multiValueHeaders": {"x-multi": ["a", "b"]},
        "body": json.dumps({"request_id": context.aws_request_id}),
        "isBase64Encoded": False,
    }


def broken_handler(event: dict, context: Any) -> dict:
    raise RuntimeError("boom")


def malformed_handler(event: dict, context: Any) -> dict:
    return {"body": "no status code"}


def slow_handler(event: dict, context: Any) -> dict:
    time.sleep(1.0)
    return echo_handler(event, context)


@pytest.fixture(autouse=True)
def fresh_client_cache():
    common.reset_client_map()
    yield
    common.reset_client_map()


@pytest.fixture()
def api_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture()
def gateway(aws, warehouse_url, api_key) -> Iterator[ApiGateway]:
    with ApiGateway(0, api_key=api_key) as gw:
        yield gw


@pytest.fixture()
def session(api_key) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["x-api-key"] = api_key
        yield s


def start_with(handler: str, api_key: str) -> ApiGateway:
    return ApiGateway(0, api_key=api_key, handler=f"{__name__}:{handler}").start()


# --- the gateway itself --------------------------------------------------------------------------


def test_request_becomes_a_rest_proxy_event(moto_endpoint, api_key) -> None:
    EVENTS.clear()
    gw = start_with("echo_handler", api_key)
    try:
        conn = http.client.HTTPConnection(LOOPBACK, gw.port, timeout=10)
        conn.putrequest("POST", "/consumo?a=1&b=2&b=3")
        for name, value in (("x-api-key", api_key), ("X-Dup", "one"), ("X-Dup", "two")):
            conn.putheader(name, value)
        conn.putheader("Content-Length", "8")
        conn.endheaders(b'{"x": 1}')
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        binary = requests.post(
            f"{gw.url}/consumo", data=b"\xff\x00\xfe", headers={"x-api-key": api_key}
        )
    finally:
        gw.stop()
    assert response.status == 299
    assert response.getheader("x-echo") == "1"
    assert response.msg.get_all("x-multi") == ["a", "b"]
    request_id = response.getheader("x-amzn-RequestId")
    event = EVENTS[0]
    assert event["resource"] == event["path"] == "/consumo"
    assert event["httpMethod"] == "POST"
    assert event["body"] == '{"x": 1}' and event["isBase64Encoded"] is False
    assert event["headers"]["X-Dup"] == "two"
    assert event["multiValueHeaders"]["X-Dup"] == ["one", "two"]
    assert event["queryStringParameters"] == {"a": "1", "b": "3"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1"], "b": ["2", "3"]}
    context = event["requestContext"]
    assert context["requestId"] == request_id
    assert answer["request_id"] != request_id  # Lambda's own id, as on AWS
    assert context["stage"] == "local" and context["path"] == "/local/consumo"
    assert context["identity"]["apiKey"] == api_key
    assert context["identity"]["sourceIp"] == LOOPBACK
    assert binary.status_code == 299
    assert EVENTS[1]["isBase64Encoded"] is True and EVENTS[1]["body"] == "/wD+"


def test_api_key_routes_methods_and_handler_failures(moto_endpoint, api_key) -> None:
    gw = start_with("echo_handler", api_key)
    try:
        url = f"{gw.url}/consumo"
        with requests.Session() as s:  # one keep-alive connection through every refusal
            assert s.post(url, data="{}").status_code == 401
            wrong = s.post(
                url,
                data="{}",
                headers={"x-api-key": api_key[:-1] + ("y" if api_key.endswith("x") else "x")},
            )
            assert wrong.status_code == 403 and wrong.json() == {"message": "Forbidden"}
            ok = {"x-api-key": api_key}
            assert s.post(f"{gw.url}/other", data="{}", headers=ok).status_code == 404
            assert s.post(f"{gw.url}/consumo/x", headers=ok).status_code == 404
            got = s.get(url, headers=ok)
            assert got.status_code == 405 and got.headers["Allow"] == "POST"
            assert s.put(url, data="{}", headers=ok).status_code == 405
            assert s.post(url, data="{}", headers=ok).status_code == 299
            health = s.get(f"{gw.url}/health").json()  # no key needed, tells nothing secret
        assert api_key not in json.dumps(health)
        assert health["statuses"] == {"299": 1, "401": 1, "403": 1, "404": 2, "405": 2}
    finally:
        gw.stop()
    for name in ("broken_handler", "malformed_handler"):
        gw = start_with(name, api_key)
        try:
            answer = requests.post(f"{gw.url}/consumo", data="{}", headers={"x-api-key": api_key})
        finally:
            gw.stop()
        assert answer.status_code == 502
        assert answer.json() == {"message": "Internal server error"}


def test_an_answered_request_is_already_counted(
    moto_endpoint, api_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that has its answer finds it in /health at once, however slow the counting (a
    loaded machine): the count comes before the answer is written."""
    counted = ApiGateway.count

    def slow_count(self: ApiGateway, status: int) -> None:
        time.sleep(0.5)
        counted(self, status)

    monkeypatch.setattr(ApiGateway, "count", slow_count)
    gw = start_with("echo_handler", api_key)
    try:
        answer = requests.post(f"{gw.url}/consumo", data="{}", headers={"x-api-key": api_key})
        assert answer.status_code == 299
        with requests.Session() as other:  # another connection, served by another thread
            assert other.get(f"{gw.url}/health", timeout=5).json()["statuses"] == {"299": 1}
    finally:
        gw.stop()


def test_body_limit_is_enforced_before_the_body_is_read(moto_endpoint, api_key) -> None:
    EVENTS.clear()
    gw = ApiGateway(0, api_key=api_key, handler=f"{__name__}:echo_handler", max_body=1000).start()
    try:
        # Only the headers are sent: a 413 arrives although the 50 MB body never does.
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as sock:
            sock.sendall(
                f"POST /consumo HTTP/1.1\r\nHost: x\r\nx-api-key: {api_key}\r\n"
                f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            )
            head = sock.recv(4096).decode()
        assert head.startswith("HTTP/1.1 413")
        assert "Connection: close" in head
        # A body just over the limit is answered 413 and the connection stays usable.
        with requests.Session() as s:
            s.headers["x-api-key"] = api_key
            assert s.post(f"{gw.url}/consumo", data=b"x" * 1001).status_code == 413
            assert s.post(f"{gw.url}/consumo", data=b"x" * 1000).status_code == 299
        assert EVENTS and len(EVENTS) == 1
    finally:
        gw.stop()


# --- read timeouts, connection cap, graceful stop (issue 11) -------------------------------------


def _closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (whatever it answers)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except OSError:
                return True
    return False


def test_a_slow_or_silent_client_cannot_hold_a_thread(moto_endpoint, api_key) -> None:
    EVENTS.clear()
    gw = ApiGateway(
        0, api_key=api_key, handler=f"{__name__}:echo_handler", read_timeout=0.5
    ).start()
    try:
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as silent:
            assert _closed(silent, 3)  # connected, never sent a byte
        # Headers trickled a byte every 0.1 s: each read is in time, the whole request is not.
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as trickle:
            head = f"POST /consumo HTTP/1.1\r\nHost: x\r\nx-api-key: {api_key}\r\n".encode()
            cut_off = False
            started = time.monotonic()
            for byte in head * 20:
                try:
                    trickle.send(bytes([byte]))
                except OSError:
                    cut_off = True
                    break
                if _closed(trickle, 0.1):
                    cut_off = True
                    break
            assert cut_off and time.monotonic() - started < 3
        # Complete headers, a body that stops half-way: cut off, the handler never called.
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as stalled:
            stalled.sendall(
                f"POST /consumo HTTP/1.1\r\nHost: x\r\nx-api-key: {api_key}\r\n"
                "Content-Length: 100\r\n\r\n0123456789".encode()
            )
            assert _closed(stalled, 3)
        assert EVENTS == []
        health = requests.get(f"{gw.url}/health", timeout=5).json()
        assert health["timed_out_reads"] >= 3 and health["read_timeout_s"] == 0.5
        # A prompt client is served as always.
        ok = requests.post(f"{gw.url}/consumo", data="{}", headers={"x-api-key": api_key})
        assert ok.status_code == 299
    finally:
        gw.stop()


def test_connections_over_the_cap_get_503_and_capacity_comes_back(moto_endpoint, api_key) -> None:
    gw = ApiGateway(
        0,
        api_key=api_key,
        handler=f"{__name__}:echo_handler",
        read_timeout=1.0,
        max_connections=2,
    ).start()
    try:
        holders = [socket.create_connection((LOOPBACK, gw.port), timeout=5) for _ in range(2)]
        time.sleep(0.3)  # both accepted and waiting for a request line
        with socket.create_connection((LOOPBACK, gw.port), timeout=5) as third:
            answer = b""
            while chunk := third.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        for held in holders:
            assert _closed(held, 3)  # the idle holders time out
            held.close()
        ok = requests.post(f"{gw.url}/consumo", data="{}", headers={"x-api-key": api_key})
        assert ok.status_code == 299
        assert requests.get(f"{gw.url}/health", timeout=5).json()["refused_connections"] == 1
    finally:
        gw.stop()


def test_stop_lets_a_request_in_progress_finish(moto_endpoint, api_key) -> None:
    gw = ApiGateway(0, api_key=api_key, handler=f"{__name__}:slow_handler").start()
    answers: list[int] = []

    def call() -> None:
        response = requests.post(
            f"{gw.url}/consumo", data="{}", headers={"x-api-key": api_key}, timeout=10
        )
        answers.append(response.status_code)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.4)  # the handler is running
    gw.stop(grace=5)
    caller.join(10)
    assert answers == [299]
    assert not port_open(gw.port)


def test_key_comes_from_configuration_only(aws, monkeypatch) -> None:
    monkeypatch.delenv("FEEDLOT_INGEST_API_KEY", raising=False)
    monkeypatch.delenv("FEEDLOT_INGEST_API_KEY_PARAMETER", raising=False)
    with pytest.raises(ServiceError, match="no API key configured"):
        resolve_api_key()
    with pytest.raises(ServiceError, match="shorter than 20"):
        resolve_api_key("short")
    name = f"/feedlot/test/{uuid.uuid4().hex[:8]}/api-key"
    monkeypatch.setenv("FEEDLOT_INGEST_API_KEY_PARAMETER", name)
    with pytest.raises(ServiceError, match="cannot read API key parameter"):
        resolve_api_key()
    key = secrets.token_urlsafe(24)
    client("ssm").put_parameter(Name=name, Value=key, Type="SecureString")
    assert resolve_api_key() == key
    monkeypatch.setenv("FEEDLOT_INGEST_API_KEY", "k" * 30)
    assert resolve_api_key() == "k" * 30  # the direct setting wins


# --- the real handler behind it ------------------------------------------------------------------


def post(session: requests.Session, gw: ApiGateway, body: Any, **headers: str) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return session.post(f"{gw.url}/consumo", data=data, headers=headers, timeout=30)


def test_post_lands_and_answers_202(aws, gateway, session) -> None:
    settings, prov = aws
    response = post(
        session, gateway, [record(lote="1"), record("FazendaX")], **{"x-correlation-id": "trace-1"}
    )
    assert response.status_code == 202
    answer = response.json()
    assert (answer["received"], answer["accepted"], answer["rejected"]) == (2, 1, 1)
    assert answer["requestId"] == response.headers["x-amzn-RequestId"]
    assert response.headers["x-correlation-id"] == answer["correlationId"] == "trace-1"
    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    assert sorted(n.key for n in notices) == sorted(answer["landed"])
    assert {n.correlation_id for n in notices} == {"trace-1"}


def test_hostile_input_through_the_api_reconciles(aws, warehouse_url, gateway, session) -> None:
    settings, prov = aws
    wh = Warehouse(warehouse_url)
    wh.add_client("Robert'); DROP TABLE clientes;--", "fazenda_bobby")
    wh.add_client("Fazenda/Tres", "fazenda_tres")
    with pytest.raises(ValueError):
        wh.add_client("FazendaEvil", "../fazenda_um")  # a farm name can never be a path
    wh.dispose()

    outcome: dict[str, tuple[int, dict]] = {}
    received = accepted = 0
    api_codes: Counter[str] = Counter()
    for what, body, expected in hostile_requests():
        headers = {"idempotency-key": "../../etc"} if "idempotency" in what else {}
        response = post(session, gateway, body, **headers)
        assert response.status_code == expected, (what, response.text[:300])
        answer = response.json()
        outcome[what] = (response.status_code, answer)
        if response.status_code == 202:
            received += answer["received"]
            accepted += answer["accepted"]
            api_codes.update(r["code"] for r in answer["rejections"])
        else:
            assert answer["message"]  # a clear reason
    assert session.get(f"{gateway.url}/health").json()["status"] == "ok"  # still up

    def codes(what: str) -> dict[int, str]:
        return {r["index"]: r["code"] for r in outcome[what][1]["rejections"]}

    assert codes("SQL injection in every text field") == {
        0: "unknown_client",
        1: "invalid_id",
        2: "invalid_id",
        3: "invalid_id",
        4: "invalid_data",
        5: "invalid_number",
        6: "invalid_number",
    }
    assert codes("path traversal and / in client names") == dict.fromkeys(
        range(4), "unknown_client"
    )
    assert codes("numbers as strings") == {2: "invalid_number", 3: "invalid_number"}
    assert codes("NaN/Infinity as strings") == dict.fromkeys(range(3), "invalid_number")
    assert codes("dates in other formats and time zones") == {
        4: "invalid_data",
        5: "invalid_data",
        6: "invalid_data",
        7: "invalid_data",
        8: "partition_mismatch",
    }
    assert codes("deeply nested values inside records") == {1: "invalid_id"}
    assert codes("array of empty things") == {0: "not_an_object", 1: "missing_field"}
    assert codes("duplicates within a request") == {}  # the same version again: unchanged
    assert codes("duplicate of an earlier request") == {}

    # Every key stays inside historico_diario/<farm>/<yyyy>/<mm>/<dd>/<file>.
    notices = [LandingNotice.parse(m["Body"]) for m in receive_all(prov.queue_url)]
    lake_keys = [
        o["Key"]
        for page in client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=settings.lake_bucket)
        for o in page.get("Contents", [])
    ]
    assert sorted(lake_keys) == sorted({n.key for n in notices})
    for key in lake_keys:
        parts = key.split("/")
        assert parts[0] == "historico_diario" and len(parts) == 6 and ".." not in parts
    farms = {n.fazenda for n in notices}
    assert farms == {"fazenda_um", "fazenda_bobby", "fazenda_tres", "_unrouted"}
    assert sum(n.records for n in notices) == received

    # Load every landed partition with the asset's own loader (the asset path itself is shown
    # in test_api_handler): landed = loaded + rejected per partition.
    totals, wh_codes = load_noticed_partitions(settings, warehouse_url, notices)
    assert totals["landed"] == received
    assert totals["loaded"] == accepted  # what the API accepted, the warehouse loaded
    assert wh_codes == api_codes

    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar()
        rejected = conn.execute(text("SELECT count(*) FROM historico_consumo_rejeitados")).scalar()
        bobby = conn.execute(
            text("SELECT cod_cliente FROM historico_consumo WHERE fazenda = 'fazenda_bobby'")
        ).scalar_one()
        clients = conn.execute(text("SELECT count(*) FROM clientes")).scalar()
        shifted = conn.execute(
            text("SELECT data FROM historico_consumo WHERE id_lote = '700'")
        ).scalar_one()
        injected = conn.execute(
            text("SELECT count(*) FROM historico_consumo_rejeitados WHERE raw_record LIKE :p"),
            {"p": "%DROP TABLE historico_consumo%"},
        ).scalar()
        strings = conn.execute(
            text("SELECT peso_medio, consumo_real FROM historico_consumo WHERE id_lote = '500'")
        ).one()
    engine.dispose()
    assert rows == totals["inserted"] and rejected == totals["rejected"]
    assert bobby == "Robert'); DROP TABLE clientes;--" and clients >= 4  # stored, not executed
    assert injected == 7  # rejected records keep the hostile text verbatim, as data
    assert shifted.isoformat().startswith("2023-01-02T00:30:00")  # converted to UTC
    assert tuple(strings) == (380.5, 9.5)


# --- feedlot api-bench and feedlot local up ------------------------------------------------------


def test_api_bench_against_a_running_route(aws, gateway, api_key, monkeypatch) -> None:
    from click.testing import CliRunner

    from feedlot_pipeline.tools.cli import main

    settings, _ = aws
    monkeypatch.setenv("FEEDLOT_INGEST_API_URL", gateway.url)
    monkeypatch.setenv("FEEDLOT_INGEST_API_KEY", api_key)
    out = CliRunner().invoke(
        main, ["api-bench", "--records", "300", "--clients", "1,3", "--batch-size", "50"]
    )
    assert out.exit_code == 0, out.output
    rows = [line.split() for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "3"] and all(r[-1] == "0" for r in rows)
    assert all(float(r[2].replace(",", "")) > 0 for r in rows)  # records/s
    s3 = client("s3")
    lines = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.lake_bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.lake_bucket, Key=obj["Key"])["Body"].read()
            lines += len(body.splitlines())
    assert lines == 600


def test_api_bench_starts_its_own_route(moto_endpoint, pg_server_url, monkeypatch) -> None:
    from click.testing import CliRunner

    from feedlot_pipeline.tools.cli import main

    monkeypatch.delenv("FEEDLOT_INGEST_API_URL", raising=False)
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", pg_server_url)  # a scratch database on it
    out = CliRunner().invoke(main, ["api-bench", "--records", "100", "--clients", "2"])
    assert out.exit_code == 0, out.output
    assert "in-process gateway, moto, PostgreSQL" in out.output
    assert os.environ["AWS_ENDPOINT_URL"] == moto_endpoint  # the session's moto again
    assert os.environ["FEEDLOT_WAREHOUSE_URL"] == pg_server_url


@pytest.mark.usefixtures("clean_env")
def test_local_up_serves_the_api_with_a_generated_key(
    tmp_path,
    ports,  # noqa: F811 - the fixture imported from test_stack
    empty_pg_url,
    monkeypatch,
) -> None:
    from feedlot_pipeline.local import stack
    from feedlot_pipeline.local.services import free_port, port_open

    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", empty_pg_url)  # no embedded server to start
    monkeypatch.delenv("FEEDLOT_INGEST_API_KEY", raising=False)
    api_port = free_port()
    while api_port in ports.values():
        api_port = free_port()
    monkeypatch.setenv("FEEDLOT_INGEST_API_PORT", str(api_port))
    state = tmp_path / "state"
    try:
        info = stack.up(state)
        services = {s.name: s for s in info.services}
        assert services["api_gateway"].alive
        url, key = info.env["FEEDLOT_INGEST_API_URL"], info.env["FEEDLOT_INGEST_API_KEY"]
        assert url == f"http://{LOOPBACK}:{api_port}" and len(key) >= 40
        assert f"export FEEDLOT_INGEST_API_KEY={key}" in (state / "env").read_text()
        assert key not in (state / "run" / "api_gateway.json").read_text()
        status = {s.name: s for s in stack.status(state).services}
        assert status["api_gateway"].alive and "POST /consumo" in status["api_gateway"].detail

        for name, value in info.env.items():  # a shell that loaded the env runs `up` again
            monkeypatch.setenv(name, value)
        again = stack.up(state)
        assert {s.name: s.state for s in again.services}["api_gateway"] == "reused"
        assert again.env["FEEDLOT_INGEST_API_KEY"] == key  # the key survives a second `up`

        answer = requests.post(f"{url}/consumo", json=[record()], headers={"x-api-key": key})
        assert answer.status_code == 202, answer.text
        assert answer.json()["landed"][0].startswith("historico_diario/fazenda_um/2023/01/01/")
        assert requests.post(f"{url}/consumo", json=[record()]).status_code == 401
        dagster = make_url(info.env["FEEDLOT_DAGSTER_STORAGE_URL"]).database
        assert dagster == f"{make_url(empty_pg_url).database}_dagster"  # beside the warehouse
    finally:
        stopped = {s.name: s.state for s in stack.down(state)}
        admin = create_engine(
            make_url(empty_pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            name = f"{make_url(empty_pg_url).database}_dagster"
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    assert stopped["api_gateway"] == "stopped"
    assert not port_open(api_port)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started (Linux)."""
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115, PTH123
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_1_mib_body_stays_under_300_mb_and_a_flood_of_records_is_refused(
    aws, warehouse_url, api_key, tmp_path
) -> None:
    """The route as its own process (``python -m …api_gateway``, the real handler): an accepted
    1 MiB body of the most records allowed keeps the process's peak RSS ≤ 300 MB; a 1 MiB body
    of ``{}``s (349,525 records) is refused with 413 before any is landed."""
    import signal
    import subprocess
    import sys

    from feedlot_pipeline.core.settings import Settings
    from feedlot_pipeline.local.services import free_port, wait_for_port

    settings = Settings()
    port = free_port()
    env = {**os.environ, "FEEDLOT_INGEST_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "gw.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedlot_pipeline.local.api_gateway", "--port", str(port)]
            + ["--state-dir", str(tmp_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, 60, proc, "API gateway")
        url = f"http://127.0.0.1:{port}/consumo"
        headers = {"x-api-key": api_key, "content-type": "application/json"}
        limit, cap = settings.ingest_api_max_body_bytes, settings.ingest_api_max_records
        assert (limit, cap) == (1_048_576, 5_000)  # the documented defaults
        flood = b"[" + b",".join([b"{}"] * ((limit - 2) // 3)) + b"]"
        assert len(flood) <= limit
        answer = requests.post(url, data=flood, headers=headers, timeout=120)
        assert answer.status_code == 413, answer.text
        assert "FEEDLOT_INGEST_API_MAX_RECORDS" in answer.json()["message"]
        one = len(json.dumps(record("FazendaUm", lote="0" * 14), separators=(",", ":"))) + 1
        real = [record("FazendaUm", lote=f"{i:014d}") for i in range((limit - 2) // one)]
        budget = (limit - 2) // cap - 1  # the most records allowed, each as long as fits
        small = [{"cod_cliente": "FazendaUm", "id_lote": f"{i:014d}"} for i in range(cap)]
        pad = budget - len(json.dumps(small[0], separators=(",", ":"))) - len(',"nota":""')
        before = _peak_rss_mb(proc.pid)
        for records in (real, [{**r, "nota": "x" * pad} for r in small]):
            body = json.dumps(records, separators=(",", ":")).encode()
            assert limit - 20_000 < len(body) <= limit
            answer = requests.post(url, data=body, headers=headers, timeout=300)
            assert answer.status_code == 202, answer.text
        peak = _peak_rss_mb(proc.pid)
        print(f"route process peak RSS: {before:.0f} MB at rest, {peak:.0f} MB after 1 MiB")
        assert peak <= 300
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_health_answers_on_a_kept_open_connection_without_a_delayed_ack(
    moto_endpoint, api_key
) -> None:
    """The local daemons answer in two writes (headers, body): without TCP_NODELAY the body
    waited for the client's delayed ACK, 40+ ms per request on a kept-open connection."""
    from feedlot_pipeline_tests.helpers import NAGLE_DELAY_SECONDS, median_request_seconds

    gw = start_with("echo_handler", api_key)
    try:
        with requests.Session() as s:
            median = median_request_seconds(lambda: s.get(f"{gw.url}/health", timeout=5).json())
        assert median < NAGLE_DELAY_SECONDS / 2, f"GET /health median {median * 1000:.1f} ms"
    finally:
        gw.stop()
