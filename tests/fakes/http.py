"""A small threaded HTTP server that records requests and answers from a programmable script.

Besides answers, a reply can be a *fault after the request arrived*: the server reads and records
the request (for a provider, it was accepted: the email or SMS goes out), then hangs up without a
word (``hang_up``), aborts the connection (``reset``), or answers too late for the client's timeout
(``Reply(..., delay=...)``). Those are the failures whose outcome the client cannot know.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        data = self.body
        if self.headers.get("content-encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return json.loads(data)


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON, or bytes sent as they are (an HTML page)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Instead of answering, after ``delay``: ``"hang_up"`` closes the connection cleanly (the
    #: client sees ``RemoteDisconnected``), ``"reset"`` aborts it (``ConnectionResetError``).
    fault: str | None = None


def hang_up() -> Reply:
    """The request is received (and recorded), then the connection is closed without an answer."""
    return Reply(0, fault="hang_up")


def reset() -> Reply:
    """The request is received (and recorded), then the connection is aborted (TCP RST)."""
    return Reply(0, fault="reset")


def gateway_error(status: int = 502) -> Reply:
    """A proxy in front of the provider answers 502 or 504: the provider may have acted."""
    title = "502 Bad Gateway" if status == 502 else "504 Gateway Time-out"
    return Reply(status, f"<html><head><title>{title}</title></head><body>{title}</body></html>".encode())


Responder = Callable[[Recorded], Reply]


class FakeServer:
    """Records every request; answers with queued replies first, then with ``default``."""

    def __init__(self, default: Responder) -> None:
        self.default = default
        self._initial_default = default
        self.requests: list[Recorded] = []
        self._queued: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget the requests received and the replies still queued, and answer with the first
        ``default`` again: a server shared by the tests of a module starts each test as new."""
        with self._lock:
            self.requests.clear()
            self._queued.clear()
            self.default = self._initial_default

    def queue(self, *replies: Reply) -> None:
        """The next requests get these replies, in order."""
        with self._lock:
            self._queued.extend(replies)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)} within {timeout}s")

    def _reply_for(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._queued:
                return self._queued.pop(0)
        return self.default(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                reply = fake._reply_for(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.fault is not None:
                    self._fail(reply.fault)
                    return
                raw = isinstance(reply.body, bytes)  # a page, such as a gateway's, not JSON
                payload = (
                    b"" if reply.body is None else reply.body if raw else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if payload:
                    self.send_header("Content-Type", "text/html" if raw else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            def _fail(self, fault: str) -> None:
                self.close_connection = True
                if fault == "reset":
                    # Linger 0: close() sends RST instead of FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                elif fault == "hang_up":
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    raise ValueError(f"unknown fault {fault!r}")

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
