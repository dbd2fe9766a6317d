"""A fake Sentry: ``POST /api/<project>/envelope/`` (gzip or plain) → 200, envelopes parsed into items.

Point a DSN at it with ``FakeSentry().start().dsn`` (``http://key@127.0.0.1:PORT/1``). ``events()``
are the error and message events, ``check_ins()`` the Crons check-ins; ``raw()`` is every envelope's
decompressed bytes, for asserting that something appears nowhere.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.http import FakeServer, Recorded, Reply


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class Envelope:
    headers: dict[str, Any]
    items: list[Item]
    raw: bytes


class EnvelopeError(ValueError):
    """Raised when a body is not a Sentry envelope."""


def decode_body(request: Recorded) -> bytes:
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding == "gzip":
        return gzip.decompress(request.body)
    if encoding in ("", "identity"):
        return request.body
    raise EnvelopeError(f"unsupported content-encoding {encoding!r}")


def parse_envelope(data: bytes) -> Envelope:
    """Parse Sentry's envelope format: a JSON header line, then (item header line, payload) pairs;
    a payload is ``length`` bytes when the item header says so, else up to the next newline."""
    header_line, _, rest = data.partition(b"\n")
    try:
        headers = json.loads(header_line)
    except ValueError as e:
        raise EnvelopeError(f"bad envelope header: {e}") from None
    items: list[Item] = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        if not item_line.strip():
            continue
        try:
            item_headers = json.loads(item_line)
        except ValueError as e:
            raise EnvelopeError(f"bad item header: {e}") from None
        length = item_headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            if len(rest) < length:
                raise EnvelopeError(f"item of {length} bytes, only {len(rest)} left")
            payload, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        items.append(Item(item_headers, payload))
    return Envelope(headers, items, data)


class FakeSentry(FakeServer):
    """Accepts envelopes for one project and key, as Sentry's ingestion endpoint does."""

    def __init__(self, *, project_id: int = 1, key: str = "key") -> None:
        self.project_id = project_id
        self.key = key
        super().__init__(self._ingest)

    @property
    def dsn(self) -> str:
        netloc = urlsplit(self.url).netloc
        return f"http://{self.key}@{netloc}/{self.project_id}"

    def _ingest(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path.rstrip("/") != f"/api/{self.project_id}/envelope":
            return Reply(404, {"detail": f"no route {request.method} {request.path}"})
        if f"sentry_key={self.key}" not in request.headers.get("x-sentry-auth", ""):
            return Reply(401, {"detail": "missing or wrong sentry_key"})
        try:
            parse_envelope(decode_body(request))
        except (EnvelopeError, OSError) as e:
            return Reply(400, {"detail": str(e)})
        return Reply(200, {})

    def envelopes(self) -> list[Envelope]:
        found = []
        for request in list(self.requests):
            try:
                found.append(parse_envelope(decode_body(request)))
            except (EnvelopeError, OSError):
                continue
        return found

    def items(self, *types: str) -> list[Item]:
        return [i for e in self.envelopes() for i in e.items if not types or i.type in types]

    def events(self) -> list[dict[str, Any]]:
        """Error and message events (not transactions, check-ins or client reports), in order."""
        return [i.json() for i in self.items("event")]

    def transactions(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("transaction")]

    def check_ins(self) -> list[dict[str, Any]]:
        return [i.json() for i in self.items("check_in")]

    def raw(self) -> bytes:
        """Every envelope received, decompressed, concatenated."""
        return b"\n".join(e.raw for e in self.envelopes())

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= count:
                return events
            time.sleep(0.05)
        raise AssertionError(f"expected {count} Sentry events, got {len(self.events())} within {timeout}s")
