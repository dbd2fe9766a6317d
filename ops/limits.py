"""Request size and rate limits of the HTTP API (pure ASGI middleware, before any route runs).

- ``BodyLimit``: a request whose body is larger than ``max_bytes`` gets 413, whether it says so in
  ``Content-Length`` or streams more than it announced (chunked); nothing is read past the limit.
- ``RateLimit``: a token bucket per caller: up to ``burst`` requests at once, refilled at ``rate``
  per second; past it, 429 with ``Retry-After``. A caller is its token (by the token's id) once
  ``identify`` has found the bearer token valid, else its client address: keying on an unchecked
  Authorization header would hand a fresh bucket to every made-up token. Valid tokens are
  remembered for ``IDENTITY_TTL`` seconds, so a known caller costs no database look-up per request.
  A token not known yet is paid for from its address's bucket *before* it is looked up: made-up
  tokens cost the database no more queries than the address's rate allows (a new valid token is
  looked up within that rate too, then has its own bucket). Buckets live in the API process (each
  process limits on its own). ``/readyz`` is limited by client address in buckets of its own
  (``probe:<address>``): each answer may open a connection to RabbitMQ, yet a busy client behind
  the same address never starves the orchestrator's probe. ``/healthz`` and ``/metrics`` are exempt.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXEMPT = frozenset({"/healthz", "/metrics"})
#: Limited by address only, in buckets of their own.
PROBES = frozenset({"/readyz"})
#: How long a token found valid keeps its own bucket without being looked up again.
IDENTITY_TTL = 60.0


async def _reply(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over the {self.max_bytes}-byte limit: send less (or split a batch)"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _reply(send, 413, detail)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, detail)


class TokenBuckets:
    """Token buckets by key, the least recently used dropped past ``max_keys``."""

    def __init__(
        self, *, rate: float, burst: int, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class RateLimit:
    """429 with ``Retry-After`` once a caller exceeds its bucket.

    ``identify(token)`` returns the id of a valid bearer token, or None; it may block (it runs in a
    worker thread). Without it every caller is its address.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: int,
        identify: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate=rate, burst=burst)
        self.identify = identify
        self.clock = clock
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()  # token hash → (id, until)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT or self.buckets.rate <= 0:
            await self.app(scope, receive, send)
            return
        wait = await self.wait(scope)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            await _reply(
                send,
                429,
                f"too many requests: slow down (at most {self.buckets.rate:g}/s, "
                f"bursts of {self.buckets.burst})",
                [(b"retry-after", retry)],
            )
            return
        await self.app(scope, receive, send)

    async def wait(self, scope: Scope) -> float:
        """Take one token from the caller's bucket: 0 if the request may go on, else the seconds
        until it may. A bearer token not known yet is paid from the address's bucket before it is
        looked up (and not looked up at all when that bucket is empty); once found valid, the
        request counts in the token's bucket as well."""
        if scope.get("path") in PROBES:
            return self.buckets.take("probe:" + address_key(scope))
        token = bearer_token(scope)
        if token is None or self.identify is None:
            return self.buckets.take(address_key(scope))
        digest = hashlib.sha256(token.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None and known[1] > self.clock():
            return self.buckets.take("token:" + known[0])
        wait = self.buckets.take(address_key(scope))
        if wait > 0:
            return wait
        try:
            ident = await anyio.to_thread.run_sync(self.identify, token)
        except Exception:  # the database is down: the caller is its address until it answers
            ident = None
        if ident is None:
            self._known.pop(digest, None)
            return 0.0
        self._known[digest] = (ident, self.clock() + IDENTITY_TTL)
        self._known.move_to_end(digest)
        while len(self._known) > self.buckets.max_keys:
            self._known.popitem(last=False)
        return self.buckets.take("token:" + ident)  # every request of a token counts in its bucket


def bearer_token(scope: Scope) -> str | None:
    """The bearer token of the request's Authorization header, unchecked."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def address_key(scope: Scope) -> str:
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"
