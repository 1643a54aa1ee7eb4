"""Local stand-in for API Gateway (REST API, Lambda proxy integration) in front of the API Lambda.

moto records API Gateway resources but cannot serve a deployed stage, and Lambda needs Docker.
This server is that stage on loopback: each HTTP request becomes the REST API proxy event
(payload 1.0, ``proxy_event.py``) API Gateway would send, the real handler is called in-process
(synchronously, as API Gateway invokes a proxy Lambda), and its proxy response becomes the HTTP
response.

What API Gateway does before the Lambda is done here too, in the same order:

- route: only ``POST /consumo`` is integrated. An unknown path is 404 and another method on
  ``/consumo`` is 405. (Deployed API Gateway answers both with 403 "Missing Authentication
  Token"; locally the precise codes help more, and both are still refusals before any key check.)
- API key (``apiKeyRequired``): header ``x-api-key``, compared in constant time with the key from
  ``FEEDLOT_INGEST_API_KEY``, else from the SSM parameter ``FEEDLOT_INGEST_API_KEY_PARAMETER``.
  There is no built-in key: without one the server refuses to start. A missing key is 401 and a
  wrong one 403, as the issue asks; deployed API Gateway answers 403 ``{"message": "Forbidden"}``
  for both, so a client must treat 401 and 403 alike.
- payload limit: ``Content-Length`` over ``FEEDLOT_INGEST_API_MAX_BODY_BYTES`` is 413 before the
  body is read; the body is then discarded in chunks (up to API Gateway's own 10 MB cap, beyond
  which the connection is simply closed) so the client can read the answer. Chunked bodies get 411.
- binary bodies: a body that is not UTF-8 is passed base64-encoded with ``isBase64Encoded`` (what
  API Gateway does for ``binaryMediaTypes: */*``); the handler decides what to do with it.
- a handler that raises or returns a malformed response is 502 ``{"message": "Internal server
  error"}``, as API Gateway answers.
- a slow client cannot hold a thread: it has ``FEEDLOT_INGEST_API_READ_TIMEOUT_SECONDS`` (10) to
  send its request line, headers and body, and at most ``FEEDLOT_INGEST_API_MAX_CONNECTIONS`` (64)
  connections are served at once (one more is answered 503 with ``Retry-After``; see
  ``daemon.py``).

Run: ``python -m feedlot_pipeline.local.api_gateway --port 9020 --state-dir .feedlot``
(``feedlot local up`` does). ``GET /health`` (no key) reports counts as JSON.

Local difference: requests run concurrently in one process, so Powertools' per-invocation log
keys (the correlation id) may be mixed between simultaneous requests' log lines; what is landed
and answered always carries the right ids.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import Any

from feedlot_pipeline.core.settings import LocalSettings, Settings
from feedlot_pipeline.local.daemon import HttpDaemon, JsonHandler, wait_for_signal
from feedlot_pipeline.local.lambda_runtime import Handler, LambdaContext, function_arn, load_handler
from feedlot_pipeline.local.proxy_event import (  # noqa: F401 - re-exported
    DEFAULT_STAGE,
    ROUTES,
    key_id,
    to_proxy_event,
)
from feedlot_pipeline.local.services import LOOPBACK, ServiceError

DEFAULT_FUNCTION_NAME = "feedlot-api-landing"
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # the service's own payload limit
MIN_KEY_LENGTH = 20  # API Gateway refuses API key values shorter than this
READ_CHUNK = 64 * 1024


def resolve_api_key(explicit: str | None = None) -> str:
    """The key clients must send: explicit, FEEDLOT_INGEST_API_KEY, or the SSM parameter named by
    FEEDLOT_INGEST_API_KEY_PARAMETER (SecureString, decrypted). No key at all is an error, never a
    default.
    """
    settings = Settings()
    configured = settings.ingest_api_key.get_secret_value() if settings.ingest_api_key else None
    key = explicit or configured
    source = "FEEDLOT_INGEST_API_KEY"
    if not key:
        parameter = settings.ingest_api_key_parameter
        if not parameter:
            raise ServiceError(
                "no API key configured: set FEEDLOT_INGEST_API_KEY or "
                "FEEDLOT_INGEST_API_KEY_PARAMETER (`feedlot local up` generates one)"
            )
        from feedlot_pipeline.core.aws import client

        try:
            response = client("ssm").get_parameter(Name=parameter, WithDecryption=True)
        except Exception as err:  # noqa: BLE001 - one clear line whatever botocore raises
            raise ServiceError(f"cannot read API key parameter {parameter!r}: {err}") from None
        key, source = response["Parameter"]["Value"], f"SSM parameter {parameter}"
    if len(key) < MIN_KEY_LENGTH:
        raise ServiceError(f"API key from {source} is shorter than {MIN_KEY_LENGTH} characters")
    return key


def max_body_bytes() -> int:
    return Settings().ingest_api_max_body_bytes


class _RequestHandler(JsonHandler):
    server_version = "feedlot-api-gateway/1"

    @property
    def gateway(self) -> ApiGateway:
        return self.service  # type: ignore[return-value]

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")

    def _handle(self, method: str) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        path, _, query = self.path.partition("?")
        status = self._serve(gateway, method, path, query, request_id)
        gateway.log.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                    "client": self.client_address[0],
                }
            },
        )

    def _serve(
        self, gateway: ApiGateway, method: str, path: str, query: str, request_id: str
    ) -> int:
        if path == "/health" and method == "GET":
            return self._reply(HTTPStatus.OK, gateway.health(), request_id)
        allowed = ROUTES.get(path)
        if allowed is None:
            self._discard_body(gateway.max_body_bytes)
            return self._reply(HTTPStatus.NOT_FOUND, {"message": "Not Found"}, request_id)
        if method not in allowed:
            self._discard_body(gateway.max_body_bytes)
            return self._reply(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"message": f"{method} not allowed on {path}: use {', '.join(allowed)}"},
                request_id,
                {"Allow": ", ".join(allowed)},
            )
        given = self.headers.get("x-api-key")
        if not given:
            self._discard_body(gateway.max_body_bytes)
            return self._reply(
                HTTPStatus.UNAUTHORIZED, {"message": "Missing API key (x-api-key)"}, request_id
            )
        if not hmac.compare_digest(given.encode(), gateway.api_key.encode()):
            self._discard_body(gateway.max_body_bytes)
            return self._reply(HTTPStatus.FORBIDDEN, {"message": "Forbidden"}, request_id)
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return self._reply(
                HTTPStatus.LENGTH_REQUIRED, {"message": "send Content-Length"}, request_id
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return self._reply(
                HTTPStatus.BAD_REQUEST, {"message": "bad Content-Length"}, request_id
            )
        limit = gateway.max_body_bytes
        if length > limit:
            if length > API_GATEWAY_MAX_BODY:
                self.close_connection = True  # not worth draining: the client is told to stop
            status = self._reply(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"message": f"body of {length} bytes exceeds {limit} bytes"},
                request_id,
            )
            self._discard(length)  # after answering: the client reads it once it has sent
            return status
        body = self.read_body(length)
        if len(body) < length:  # the client stopped sending (or was cut off at its deadline)
            self.close_connection = True
            return self._reply(
                HTTPStatus.BAD_REQUEST, {"message": "body shorter than Content-Length"}, request_id
            )
        event = to_proxy_event(
            method=method,
            path=path,
            query=query,
            header_items=list(self.headers.items()),
            body=body or None,
            request_id=request_id,
            api_key=given,
            source_ip=self.client_address[0],
            stage=gateway.stage,
            host=f"{gateway.host}:{gateway.port}",
        )
        return self._invoke(gateway, event, request_id)

    def _invoke(self, gateway: ApiGateway, event: dict, request_id: str) -> int:
        context = LambdaContext(
            function_name=gateway.function_name,
            invoked_function_arn=function_arn(gateway.region, gateway.function_name),
            aws_request_id=str(uuid.uuid4()),
        )
        try:
            result = gateway.handler()(event, context)
            status = int(result["statusCode"])
            if not 100 <= status <= 599:
                raise ValueError(f"statusCode {status}")
            body = result.get("body") or ""
            data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
            headers: list[tuple[str, str]] = [
                (str(k), str(v)) for k, v in (result.get("headers") or {}).items()
            ]
            for name, values in (result.get("multiValueHeaders") or {}).items():
                headers.extend((str(name), str(v)) for v in values)
        except Exception as err:  # noqa: BLE001 - any handler failure is a 502, as on AWS
            gateway.log.error(
                "handler failed",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "error": f"{type(err).__name__}: {err}",
                        "trace": traceback.format_exception(err)[-6:],
                    }
                },
            )
            return self._reply(
                HTTPStatus.BAD_GATEWAY, {"message": "Internal server error"}, request_id
            )
        return self._send(status, data, request_id, headers)

    def _discard_body(self, limit: int) -> None:
        """Read and drop a body we answer without using, so the connection stays usable."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if self.headers.get("Transfer-Encoding") or length < 0 or length > limit:
            self.close_connection = True
            return
        self._discard(length)

    def _discard(self, length: int) -> None:
        if length > API_GATEWAY_MAX_BODY:
            self.close_connection = True  # beyond what API Gateway would ever read
            return
        left = length
        self.watch()  # draining is reading too: the same deadline
        try:
            while left > 0:
                chunk = self.rfile.read(min(READ_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            self.close_connection = True
        finally:
            self.unwatch()
        if left:
            self.close_connection = True

    def _reply(
        self,
        status: HTTPStatus,
        body: dict,
        request_id: str,
        extra: dict[str, str] | None = None,
    ) -> int:
        headers = [("Content-Type", "application/json"), *(extra or {}).items()]
        return self._send(int(status), json.dumps(body).encode(), request_id, headers)

    def _send(
        self, status: int, data: bytes, request_id: str, headers: list[tuple[str, str]]
    ) -> int:
        """The one answer of a request; counted before it is written, so a client that has its
        answer finds it in /health's counts."""
        self.gateway.count(status)
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("x-amzn-RequestId", request_id)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away: nothing to answer
            self.close_connection = True
        return status


class ApiGateway(HttpDaemon):
    """The HTTP stage plus the handler it calls; ``start()`` serves on a background thread.

    Unset arguments come from the settings (key, handler, body limit, read timeout, connections).
    """

    name = "api_gateway"
    handler_class = _RequestHandler

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = LOOPBACK,
        api_key: str | None = None,
        handler: str | None = None,
        state_dir: Path | None = None,
        stage: str = DEFAULT_STAGE,
        function_name: str = DEFAULT_FUNCTION_NAME,
        max_body: int | None = None,
        read_timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        local, settings = LocalSettings(), Settings()
        self.api_key = resolve_api_key(api_key)
        super().__init__(
            host,
            port,
            log_path=Path(state_dir) / "logs" / "api_gateway.log" if state_dir else None,
            read_timeout=read_timeout or local.ingest_api_read_timeout_seconds,
            max_connections=max_connections or local.ingest_api_max_connections,
        )
        self.handler_spec = handler or local.ingest_api_handler
        self.stage = stage
        self.function_name = function_name
        self.region = settings.region
        self.max_body_bytes = (
            max_body if max_body is not None else settings.ingest_api_max_body_bytes
        )
        self._handler: Handler | None = None
        self._count_lock = threading.Lock()
        self._statuses: Counter[int] = Counter()

    def handler(self) -> Handler:
        if self._handler is None:
            self._handler = load_handler(self.handler_spec)
        return self._handler

    def start(self) -> ApiGateway:
        super().start()
        return self

    def __enter__(self) -> ApiGateway:
        return self.start()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "handler": self.handler_spec,
            "max_body_bytes": self.max_body_bytes,
            "api_key_id": key_id(self.api_key),
        }

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish, release the port."""
        self.stop_serving(grace)
        with self._count_lock:
            statuses = dict(self._statuses)
        self.log.info("stopped", extra={"fields": {"statuses": statuses}})
        self.close_log()

    def count(self, status: int) -> None:
        with self._count_lock:
            self._statuses[status] += 1

    def health(self) -> dict[str, Any]:
        with self._count_lock:
            statuses = {str(k): v for k, v in sorted(self._statuses.items())}
            requests = sum(self._statuses.values())
        return {
            **super().health(),
            "url": self.url,
            "routes": {path: list(methods) for path, methods in ROUTES.items()},
            "handler": self.handler_spec,
            "api_key_id": key_id(self.api_key),
            "max_body_bytes": self.max_body_bytes,
            "read_timeout_s": self.read_timeout,
            "max_connections": self.max_connections,
            "requests": requests,
            "statuses": statuses,
        }


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    local = LocalSettings()
    parser = argparse.ArgumentParser(prog="python -m feedlot_pipeline.local.api_gateway")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=local.ingest_api_port)
    parser.add_argument("--state-dir", type=Path, default=local.state_dir)
    parser.add_argument(
        "--handler", default=None, help=f"module:function (default {local.ingest_api_handler})"
    )
    args = parser.parse_args(argv)
    try:
        gateway = ApiGateway(
            args.port, host=args.host, handler=args.handler, state_dir=args.state_dir
        )
        gateway.start()
    except ServiceError as err:
        print(f"api gateway: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(
            f"api gateway: cannot listen on {args.host}:{args.port}: {err}; "
            "set FEEDLOT_INGEST_API_PORT",
            file=sys.stderr,
        )
        return 2
    print(f"api gateway: POST {gateway.url}/consumo (handler {gateway.handler_spec})", flush=True)
    wait_for_signal()
    gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
