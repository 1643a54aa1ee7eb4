"""One small HTTP daemon for the local emulators (Lambda bridge, API gateway, SSM endpoint).

What each of them needs and gets here once: a thread per connection (``ThreadingHTTPServer``),
JSON replies, ``GET /health`` with the pid, JSON log lines, and three protections:

- read timeouts: a client has ``read_timeout`` seconds (default 10) to send a request's line,
  headers and body, counted from the first byte it may send, and the same for an idle keep-alive
  connection; a slow or silent client is disconnected instead of holding a thread forever;
- a cap on concurrent connections (default 64): one more is answered ``503`` with
  ``Retry-After: 1`` at once and closed;
- a graceful stop: no new connections, requests in progress finish (for a while), idle
  keep-alive connections are closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from feedlot_pipeline.local.services import LOOPBACK, JsonLogFormatter
from feedlot_pipeline.local.state import private_file

READ_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 64
STOP_GRACE_SECONDS = 5.0


def json_logger(
    name: str, path: Path | None = None, stream: TextIO | None = None
) -> tuple[logging.Logger, logging.Handler]:
    """A logger of its own (not registered globally) writing JSON lines to ``path`` or
    ``stream``, else nowhere; the caller closes the handler."""
    logger = logging.Logger(f"feedlot.{name}", logging.INFO)
    handler: logging.Handler
    if path is not None:
        handler = logging.FileHandler(private_file(path), encoding="utf-8")
    elif stream is not None:
        handler = logging.StreamHandler(stream)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(JsonLogFormatter(name))
    logger.addHandler(handler)
    return logger, handler


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (a service process's main loop)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler base: JSON replies, GET /health, read deadline, busy accounting."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    # Replies go out in two writes (headers, body): with Nagle's algorithm the body waits for
    # the client's delayed ACK on a kept-open connection, ~40 ms per request.
    disable_nagle_algorithm = True
    server_version = "feedlot-local/1"
    _busy = False

    @property
    def service(self) -> HttpDaemon:
        return self.server.service

    def setup(self) -> None:
        # Each socket read gives up after this (a backstop); the watchdog's deadline, shorter,
        # is what bounds a whole request and is counted in health's timed_out_reads.
        self.timeout = 2 * self.service.read_timeout + 1
        super().setup()

    def handle_one_request(self) -> None:
        self._busy = False
        self.watch()
        try:
            super().handle_one_request()
        finally:
            self.unwatch()
            if self._busy:
                self.service._leave()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.service.stopping:
            self.close_connection = True
            self.reply_json(HTTPStatus.SERVICE_UNAVAILABLE, {"message": "stopping"})
            return False
        self._busy = True
        self.service._enter()
        return True

    # the read deadline ------------------------------------------------------------------------

    def watch(self) -> None:
        """From now the client has ``read_timeout`` seconds to send what is read next."""
        self.service._watch(self)

    def unwatch(self) -> None:
        self.service._unwatch(self)

    def read_body(self, length: int) -> bytes:
        """The request body (``length`` bytes, or fewer if the client stops); ends the deadline."""
        data = self.rfile.read(length) if length > 0 else b""
        self.unwatch()
        return data

    # replies ----------------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self.unwatch()  # answering: the client's sending is over
        super().send_response(code, message)

    def reply_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> int:
        data = json.dumps(body, default=str).encode()
        return self.send_bytes(status, data, "application/json", headers)

    def send_bytes(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> int:
        try:
            self.send_response(int(status))
            self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away: nothing to answer
            self.close_connection = True
        return int(status)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?", 1)[0] == "/health":
            self.reply_json(HTTPStatus.OK, self.service.health())
        else:
            self.reply_json(HTTPStatus.NOT_FOUND, {"message": "Not Found"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        self.service.log.debug("http: " + (format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    service: HttpDaemon

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.service._slots.acquire(blocking=False):
            self.service._refuse(request, client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.service._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """socketserver's, with the slot given back *before* the connection is closed: a client
        that sees the close and connects again finds the slot free."""
        self.service._connected(request)
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.service._disconnected(request)
            self.service._slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished or was cut off at its deadline: one debug line, no traceback.
        self.service.log.debug("connection error", exc_info=True)


class HttpDaemon:
    """Serve ``handler_class`` on ``host:port`` (0: any free port) on a background thread."""

    name = "daemon"  # logger name
    handler_class: type[JsonHandler] = JsonHandler

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        log_path: Path | None = None,
        log_stream: TextIO | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if read_timeout <= 0 or max_connections < 1:
            raise ValueError("read_timeout must be > 0 and max_connections >= 1")
        self.host = host
        self.port = port
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.log, self._log_handler = json_logger(self.name, log_path, log_stream)
        self.stopping = False
        self.refused = 0
        self.timed_out = 0
        self._started_at = time.time()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._connections: set[socket.socket] = set()
        self._deadlines: dict[JsonHandler, tuple[float, socket.socket]] = {}
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpDaemon:
        server = _Server((self.host, self.port), self.handler_class, bind_and_activate=False)
        server.service = self
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        self._server = server
        self.port = server.server_address[1]  # port 0 → the one the OS chose
        self.stopping = False
        self._stopped.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name=f"{self.name}-http", daemon=True
        )
        self._thread.start()
        threading.Thread(target=self._watchdog, name=f"{self.name}-deadlines", daemon=True).start()
        self.log.info("listening", extra={"fields": {"pid": os.getpid(), **self.describe()}})
        return self

    def describe(self) -> dict[str, Any]:
        """What the "listening" log line says besides the pid."""
        return {
            "url": self.url,
            "read_timeout_s": self.read_timeout,
            "max_connections": self.max_connections,
        }

    def health(self) -> dict[str, Any]:
        with self._lock:
            connections = len(self._connections)
        return {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self._started_at, 1),
            "connections": connections,
            "refused_connections": self.refused,
            "timed_out_reads": self.timed_out,
        }

    def stop_serving(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop accepting, let requests in progress finish (up to ``grace`` s), then close every
        connection and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping = True
        server.shutdown()
        server.server_close()
        self._stopped.set()
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, grace)
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close_log(self) -> None:
        self.log.removeHandler(self._log_handler)
        self._log_handler.close()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.stop_serving(grace)
        self.log.info("stopped", extra={"fields": self.health()})
        self.close_log()

    def __enter__(self) -> HttpDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # bookkeeping (called by the server and the handlers) ---------------------------------------

    def _connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def _enter(self) -> None:
        with self._lock:
            self._busy += 1

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy:
                self._idle.notify_all()

    def _watch(self, handler: JsonHandler) -> None:
        with self._lock:
            self._deadlines[handler] = (time.monotonic() + self.read_timeout, handler.connection)

    def _unwatch(self, handler: JsonHandler) -> None:
        with self._lock:
            self._deadlines.pop(handler, None)

    def _watchdog(self) -> None:
        """Cut off connections whose client did not send in time (their thread then ends)."""
        tick = min(0.25, self.read_timeout / 4)
        while not self._stopped.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [(h, s) for h, (due, s) in self._deadlines.items() if due <= now]
                for handler, _ in late:
                    del self._deadlines[handler]
                self.timed_out += len(late)
            for handler, sock in late:
                self.log.info(
                    "read timeout: connection closed",
                    extra={"fields": {"client": handler.client_address[0]}},
                )
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _refuse(self, sock: socket.socket, client_address: Any) -> None:
        body = json.dumps({"message": "too many connections, retry"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        with self._lock:  # counted before the client can have its answer
            self.refused += 1
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(head.encode() + body)
        self.log.warning(
            "connection refused: too many connections",
            extra={
                "fields": {"client": client_address[0], "max_connections": self.max_connections}
            },
        )
