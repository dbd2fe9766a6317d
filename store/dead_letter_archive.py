"""The dead-letter archive: dead letters moved out of ``Q.XQ`` before RabbitMQ's TTL drops them.

One archive file per queue, day and run, in storage (``store.storage``)::

    dead-letters/<queue>/<YYYY-MM-DD>/<HHMMSS>-<run>-n<count>.jsonl.gz

gzipped JSON lines, one per dead letter, each the letter exactly as it sat in ``Q.XQ``: its body
byte for byte (base64), its AMQP headers (made JSON-safe: bytes as text), priority and timestamp,
and when it was archived. The day is the archive run's (UTC). Each run writes files of its own
under names no other run can pick (a random run id), so two runs never replace each other's file;
the count in the name lets ``edujobs dlq stats`` count archived letters without opening a file.

The writer (``maintenance.archive_dead_letters``) writes a file, which storage makes durable
(flushed and renamed, or a completed upload), before it removes the letters from ``Q.XQ``: a crash
in between leaves them in both places and the next run archives them again, so a letter may be
archived twice, never lost. ``read`` skips a line that is not an archived letter (and logs it)
instead of failing, so one damaged file hides nothing else.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import gzip
import json
import logging
import math
import re
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store.storage import Storage

logger = logging.getLogger(__name__)

PREFIX = "dead-letters/"
_COUNT = re.compile(r"-n(\d+)\.jsonl\.gz$")


@dataclass(frozen=True)
class ArchivedLetter:
    """One dead letter as it sat in ``Q.XQ``, and where and when it was archived."""

    queue: str
    body: bytes
    headers: dict[str, Any]
    priority: int | None
    timestamp: int | None  # AMQP, seconds: when it was dead-lettered
    archived_at: int  # milliseconds
    key: str = ""

    def line(self) -> bytes:
        data = {
            "queue": self.queue,
            "body_base64": base64.b64encode(self.body).decode(),
            "headers": self.headers,
            "priority": self.priority,
            "timestamp": self.timestamp,
            "archived_at": self.archived_at,
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def json_safe(value: Any, depth: int = 8) -> Any:
    """An AMQP header value as JSON can carry it: bytes as text, decimals and times as strings,
    non-finite floats as text, tables cut (``…``) below ``depth`` levels."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if depth <= 0 and isinstance(value, dict | list | tuple):
        return "…"
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth - 1) for v in value]
    return str(value)


def queue_prefix(queue: str) -> str:
    return f"{PREFIX}{queue}/"


def write(storage: Storage, queue: str, letters: Sequence[ArchivedLetter], *, now_ms: int) -> str:
    """Write ``letters`` (of ``queue``) as one new archive file and return its key; when this
    returns, the file is durable."""
    at = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.UTC)
    run = uuid.uuid4().hex[:8]
    key = f"{queue_prefix(queue)}{at:%Y-%m-%d}/{at:%H%M%S}-{run}-n{len(letters)}.jsonl.gz"
    data = gzip.compress(b"".join(letter.line() for letter in letters), compresslevel=6)
    storage.put_bytes(key, data, content_type="application/gzip")
    return key


def keys(storage: Storage, queue: str) -> list[str]:
    """The queue's archive files, oldest first."""
    return [key for key in storage.list(queue_prefix(queue)) if key.endswith(".jsonl.gz")]


def count(storage: Storage, queue: str) -> int:
    """How many letters the queue's archive files hold, from their names (a letter archived twice,
    after a crash between the archive and its removal, counts twice)."""
    total = 0
    for key in keys(storage, queue):
        match = _COUNT.search(key)
        total += int(match.group(1)) if match else 0
    return total


def read(storage: Storage, queue: str) -> Iterator[ArchivedLetter]:
    """Every archived letter of ``queue``, oldest file first, in archive order."""
    for key in keys(storage, queue):
        yield from _read_file(storage, key, queue)


def _read_file(storage: Storage, key: str, queue: str) -> Iterator[ArchivedLetter]:
    with storage.open(key) as raw, gzip.open(raw, "rb") as lines:
        number = 0
        try:
            for number, line in enumerate(lines, 1):
                letter = _parse_line(line, key, queue)
                if letter is None:
                    logger.warning("Skipped line %d of %s: not an archived dead letter.", number, key)
                    continue
                yield letter
        except (OSError, EOFError, zlib.error) as e:
            logger.warning(
                "Archive file %s is damaged after line %d (%s): the rest is unreadable.", key, number, e
            )


def _parse_line(line: bytes, key: str, queue: str) -> ArchivedLetter | None:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            return None
        body = base64.b64decode(data["body_base64"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return None
    headers = data.get("headers")
    priority, timestamp, archived_at = data.get("priority"), data.get("timestamp"), data.get("archived_at")
    return ArchivedLetter(
        queue=queue,
        body=body,
        headers=headers if isinstance(headers, dict) else {},
        priority=_int(priority),
        timestamp=_int(timestamp),
        archived_at=_int(archived_at) or 0,
        key=key,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def archived_letter(
    queue: str, body: bytes, headers: Mapping[str, Any] | None, priority: Any, timestamp: Any, now_ms: int
) -> ArchivedLetter:
    """An ``ArchivedLetter`` from what AMQP gave for one message of ``Q.XQ``."""
    return ArchivedLetter(
        queue=queue,
        body=body,
        headers={str(k): json_safe(v) for k, v in (headers or {}).items()},
        priority=_int(priority),
        timestamp=_int(timestamp),
        archived_at=now_ms,
    )
