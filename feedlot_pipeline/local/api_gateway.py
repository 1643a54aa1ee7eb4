"""Local stand-in for API Gateway (REST API, Lambda proxy integration) in front of the API Lambda.

moto records API Gateway resources but cannot serve a deployed stage, and Lambda needs Docker.
This server is that stage on loopback: each HTTP request becomes the REST API proxy event
(payload 1.0) API Gateway would send, the real handler is called in-process (synchronously, as
API Gateway invokes a proxy Lambda), and its proxy response becomes the HTTP response.

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

Run: ``python -m feedlot_pipeline.local.api_gateway --port 9020 --state-dir .feedlot``
(``feedlot local up`` does). ``GET /health`` (no key) reports counts as JSON.

Local difference: requests run concurrently in one process, so Powertools' per-invocation log
keys (the correlation id) may be mixed between simultaneous requests' log lines; what is landed
and answered always carries the right ids.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from feedlot_pipeline.local.lambda_bridge import Handler, LambdaContext, load_handler
from feedlot_pipeline.local.services import LOOPBACK, JsonLogFormatter, ServiceError

DEFAULT_HANDLER = "feedlot_pipeline.lambdas.api_handler:handler"
DEFAULT_FUNCTION_NAME = "feedlot-api-landing"
DEFAULT_PORT = 9020
DEFAULT_STAGE = "local"
ROUTES: dict[str, tuple[str, ...]] = {"/consumo": ("POST",)}
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # the service's own payload limit
MIN_KEY_LENGTH = 20  # API Gateway refuses API key values shorter than this
READ_CHUNK = 64 * 1024
ACCOUNT = "123456789012"


# --- configuration -------------------------------------------------------------------------------


def resolve_api_key(explicit: str | None = None) -> str:
    """The key clients must send: explicit, FEEDLOT_INGEST_API_KEY, or the SSM parameter named by
    FEEDLOT_INGEST_API_KEY_PARAMETER (SecureString, decrypted). No key at all is an error, never a
    default.
    """
    key = explicit or os.environ.get("FEEDLOT_INGEST_API_KEY")
    source = "FEEDLOT_INGEST_API_KEY"
    if not key:
        parameter = os.environ.get("FEEDLOT_INGEST_API_KEY_PARAMETER")
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
    from feedlot_pipeline.core.settings import env

    return int(env("FEEDLOT_INGEST_API_MAX_BODY_BYTES"))


# --- event shape ---------------------------------------------------------------------------------


def to_proxy_event(
    *,
    method: str,
    path: str,
    query: str,
    header_items: list[tuple[str, str]],
    body: bytes | None,
    request_id: str,
    api_key: str | None,
    source_ip: str,
    stage: str = DEFAULT_STAGE,
    api_id: str = "local",
    host: str = LOOPBACK,
) -> dict:
    """The REST API proxy event (payload 1.0) API Gateway sends the Lambda for one request."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in header_items:
        headers[name] = value  # API Gateway keeps the last value in ``headers``
        multi_headers.setdefault(name, []).append(value)
    multi_query = parse_qs(query, keep_blank_values=True) if query else {}
    if body is None or body == b"":
        text, encoded = None, False
    else:
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    now = datetime.now(timezone.utc)
    resource = path if path in ROUTES else "/{proxy+}"
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": hashlib.sha1(resource.encode()).hexdigest()[:6],
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id[:16],
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": headers.get("User-Agent") or headers.get("user-agent"),
                "user": None,
                "apiKey": api_key,
                "apiKeyId": _key_id(api_key) if api_key else None,
            },
            "domainName": host,
            "apiId": api_id,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _key_id(key: str) -> str:
    """A stable, non-secret id for the key (API Gateway logs the key id, never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


# --- logging -------------------------------------------------------------------------------------


# --- HTTP ----------------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections, as with API Gateway
    server_version = "feedlot-api-gateway/1"

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
        gateway = self.server.gateway
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        path, _, query = self.path.partition("?")
        status = self._serve(gateway, method, path, query, request_id)
        gateway.count(status)
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
        body = self.rfile.read(length) if length > 0 else None
        event = to_proxy_event(
            method=method,
            path=path,
            query=query,
            header_items=list(self.headers.items()),
            body=body,
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
            invoked_function_arn=f"arn:aws:lambda:{gateway.region}:{ACCOUNT}:function:"
            f"{gateway.function_name}",
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
        try:
            while left > 0:
                chunk = self.rfile.read(min(READ_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            self.close_connection = True
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # one structured line per request is logged by the gateway instead


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    gateway: ApiGateway


class ApiGateway:
    """The HTTP stage plus the handler it calls; ``start()`` serves on a background thread."""

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
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = resolve_api_key(api_key)
        self.handler_spec = (
            handler or os.environ.get("FEEDLOT_INGEST_API_HANDLER") or DEFAULT_HANDLER
        )
        self.stage = stage
        self.function_name = function_name
        self.region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        self.max_body_bytes = max_body if max_body is not None else max_body_bytes()
        self.log = logging.getLogger(f"feedlot.api_gateway.{id(self)}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        self._log_handler: logging.Handler = logging.NullHandler()
        if state_dir is not None:
            path = Path(state_dir) / "logs" / "api_gateway.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handler = logging.FileHandler(path, encoding="utf-8")
            self._log_handler.setFormatter(JsonLogFormatter("api_gateway"))
        self.log.addHandler(self._log_handler)
        self._handler: Handler | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._statuses: Counter[int] = Counter()
        self._started_at = time.time()

    @property
    def url(self) -> str:
        """Base URL of the stage: POST ``{url}/consumo``."""
        return f"http://{self.host}:{self.port}"

    def handler(self) -> Handler:
        if self._handler is None:
            self._handler = load_handler(self.handler_spec)
        return self._handler

    def start(self) -> ApiGateway:
        self._server = _Server((self.host, self.port), _RequestHandler)
        self._server.gateway = self
        self.port = self._server.server_address[1]  # port 0 → the one the OS chose
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-gateway-http", daemon=True
        )
        self._thread.start()
        self.log.info(
            "listening",
            extra={
                "fields": {
                    "url": self.url,
                    "handler": self.handler_spec,
                    "pid": os.getpid(),
                    "max_body_bytes": self.max_body_bytes,
                    "api_key_id": _key_id(self.api_key),
                }
            },
        )
        return self

    def stop(self) -> None:
        """Stop accepting and release the port (requests in flight finish on their threads)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.log.info("stopped", extra={"fields": {"statuses": dict(self._statuses)}})
        self.log.removeHandler(self._log_handler)
        self._log_handler.close()

    def __enter__(self) -> ApiGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1

    def health(self) -> dict:
        with self._lock:
            statuses = {str(k): v for k, v in sorted(self._statuses.items())}
        return {
            "status": "ok",
            "pid": os.getpid(),
            "url": self.url,
            "routes": {path: list(methods) for path, methods in ROUTES.items()},
            "handler": self.handler_spec,
            "api_key_id": _key_id(self.api_key),
            "max_body_bytes": self.max_body_bytes,
            "uptime_s": round(time.time() - self._started_at, 1),
            "requests": sum(self._statuses.values()),
            "statuses": statuses,
        }


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m feedlot_pipeline.local.api_gateway")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("FEEDLOT_INGEST_API_PORT") or DEFAULT_PORT)
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("FEEDLOT_STATE_DIR", ".feedlot"))
    )
    parser.add_argument(
        "--handler",
        default=None,
        help=f"module:function (default FEEDLOT_INGEST_API_HANDLER or {DEFAULT_HANDLER})",
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
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
