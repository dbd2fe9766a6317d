"""HTTP connections that tell the ledger the moment a request starts to leave.

The ledger tells a dead worker's unsent request (sent again at once) from one the provider may have
(an unknown outcome, held for an operator) by one mark, ``store.once.request_leaving``. The later
the mark, the fewer unknown outcomes a crash leaves: connecting and the TLS handshake take a good
part of a call (a full listen backlog costs a 1 s SYN retry; a TLS handshake to a provider, a
round trip or two), and a request whose connection was not even up provably went nowhere.

So the mark is made by the connection itself, in ``send``, once the connection is up and before
its first byte is written (``http.client`` connects on the first ``send``; urllib3 connects HTTPS
before it). The SDKs are unchanged: urllib's opener gets handlers that open these connections
(SendGrid), and requests' sessions an adapter whose pools make them (Twilio, firebase-admin).
"""

from __future__ import annotations

import http.client
import urllib.request
from typing import Any

import requests.adapters
import urllib3.connection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from store.once import request_leaving


class _MarksLeaving:
    """Mixed into an ``http.client.HTTPConnection``: the first bytes of a request mark it leaving."""

    sock: Any
    auto_open: int

    def send(self, data: Any) -> None:
        if self.sock is None and self.auto_open:
            self.connect()  # type: ignore[attr-defined]  # up (TCP, TLS) before anything is written
        request_leaving()
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_MarksLeaving, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_MarksLeaving, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


def build_opener() -> urllib.request.OpenerDirector:
    """``urllib.request.build_opener()``, whose HTTP and HTTPS connections mark leaving."""
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


class _Urllib3HTTPConnection(_MarksLeaving, urllib3.connection.HTTPConnection):
    pass


class _Urllib3HTTPSConnection(_MarksLeaving, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _Urllib3HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _Urllib3HTTPSConnection


class MarkingAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter (mount it on the provider's base URL) whose connections mark leaving."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
