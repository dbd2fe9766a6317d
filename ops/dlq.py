"""Dead-letter review: list, inspect, requeue, purge and export the dead letters of ``Q.XQ``.

One implementation behind the ``edujobs dlq`` commands and the HTTP API.

RabbitMQ cannot peek at a queue, so every read takes the messages on a dedicated channel *without
acknowledging them* (``basic_get`` with manual acks) and then closes that channel: RabbitMQ puts every
unacknowledged message back in its original position, so listing never removes or reorders a dead
letter. Actions work on that same channel: a requeue republishes the selected dead letters to their
original queue with a publisher confirm and only then acks (removes) the dead letter; a purge acks
the selected ones; every other message goes back untouched when the channel closes. A crash between
the confirm and the ack leaves the dead letter in place and the message requeued, which is at worst a
duplicate with the same message id, deduplicated by the ledger: nothing is ever lost.

A dead letter is the original Dramatiq message with ``options["dead_letter"]`` (see ``brokers.dlq``)
and ``x-edujobs-*`` headers; an undecodable body has only the headers and is shown as raw base64.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import getpass
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine

from brokers.topology import DOMAIN_QUEUES, canonical, dead_letter_queue
from contracts.errors import EdujobsError

logger = logging.getLogger(__name__)

#: Options that belong to one life of a message and are reset when it is requeued.
RESET_OPTIONS = (
    "retries",
    "dead_letter",
    "dead_letter_reason",
    "dead_letter_exception",
    "traceback",
    "first_failure_at",
    "requeue_timestamp",
    "eta",
)

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(e[-_]?mail|phone|mobile|name|token|password|passwd|secret|api[-_]?key|address|birth|ssn|iban|card)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{7,}\d(?![\w.])")


class DeadLetterError(EdujobsError):
    """Raised when an operation on the dead letters cannot be done (bad input or broker failure)."""


class NotFound(DeadLetterError):
    """Raised when no dead letter has the given id."""


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with personal data replaced: values under sensitive keys (emails, phones, names,
    tokens...) and email addresses or phone numbers inside any string."""
    sensitive = key is not None and _SENSITIVE_KEY.search(key) is not None
    if sensitive and value not in (None, "") and not isinstance(value, dict | list):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, value))
    return value


@dataclass
class DeadLetter:
    """One dead letter as read from ``Q.XQ``."""

    id: str
    queue: str
    position: int
    body: bytes
    headers: dict[str, Any]
    priority: int | None
    message: dict[str, Any] | None  # None: the body is not a Dramatiq message
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def decoded(self) -> bool:
        return self.message is not None

    @property
    def actor(self) -> str:
        return str((self.message or {}).get("actor_name", ""))

    @property
    def reason(self) -> str:
        return str(self.record.get("reason", ""))

    @property
    def fingerprint(self) -> str:
        return str(self.record.get("fingerprint", ""))

    @property
    def last_failure_at(self) -> int:
        return int(self.record.get("last_failure_at") or 0)

    def summary(self) -> dict[str, Any]:
        """What a listing shows: no arguments, no traceback."""
        return {
            "id": self.id,
            "queue": self.queue,
            "position": self.position,
            "actor": self.actor,
            "reason": self.reason,
            "exception_type": self.record.get("exception_type", ""),
            "error": redact(str(self.record.get("error", ""))),
            "attempts": self.record.get("attempts"),
            "first_failure_at": self.record.get("first_failure_at"),
            "last_failure_at": self.record.get("last_failure_at"),
            "fingerprint": self.fingerprint,
            "worker": self.record.get("worker", ""),
            "decoded": self.decoded,
        }

    def detail(self, *, reveal: bool = False) -> dict[str, Any]:
        """Everything about the dead letter; arguments redacted unless ``reveal``."""
        data = self.summary()
        data["error"] = str(self.record.get("error", "")) if reveal else data["error"]
        data["traceback"] = self.record.get("traceback", "")
        data["headers"] = {k: v for k, v in self.headers.items()}
        data["revealed"] = reveal
        if self.message is None:
            data["raw_base64"] = base64.b64encode(self.body).decode() if reveal else REDACTED
            data["raw_bytes"] = len(self.body)
            return data
        args = self.message.get("args", [])
        kwargs = self.message.get("kwargs", {})
        data["args"] = args if reveal else redact(args)
        data["kwargs"] = kwargs if reveal else redact(kwargs)
        data["options"] = {
            k: v for k, v in self.message.get("options", {}).items() if k not in ("dead_letter", "traceback")
        }
        data["message_timestamp"] = self.message.get("message_timestamp")
        return data

    def export(self) -> dict[str, Any]:
        """One JSON line of ``export``: the full message (or raw base64 body) and its headers."""
        data = self.summary()
        data["headers"] = self.headers
        data["priority"] = self.priority
        if self.message is None:
            data["raw_base64"] = base64.b64encode(self.body).decode()
        else:
            data["message"] = self.message
        return data


def parse(
    queue: str, position: int, body: bytes, headers: Mapping[str, Any], priority: int | None
) -> DeadLetter:
    """Read one dead letter; an undecodable body keeps its bytes and its record from the headers."""
    clean = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in headers.items()}
    message: dict[str, Any] | None
    try:
        loaded = json.loads(body)
        message = loaded if isinstance(loaded, dict) and "message_id" in loaded else None
    except (ValueError, UnicodeDecodeError):
        message = None
    record: dict[str, Any] = {}
    if message is not None:
        record = dict((message.get("options") or {}).get("dead_letter") or {})
    if not record:
        record = {
            "reason": clean.get("x-edujobs-reason", ""),
            "exception_type": clean.get("x-edujobs-exception", ""),
            "error": clean.get("x-edujobs-error", ""),
            "traceback": "",
            "attempts": clean.get("x-edujobs-attempts"),
            "first_failure_at": clean.get("x-edujobs-first-failure-at"),
            "last_failure_at": clean.get("x-edujobs-last-failure-at"),
            "fingerprint": clean.get("x-edujobs-fingerprint", ""),
            "worker": clean.get("x-edujobs-worker", ""),
        }
    if message is not None:
        ident = str(message["message_id"])
    else:
        ident = "raw-" + hashlib.sha1(body).hexdigest()[:16]
    return DeadLetter(ident, canonical(queue), position, body, clean, priority, message, record)


@dataclass
class _Held:
    letter: DeadLetter
    tag: int


@dataclass
class Selection:
    """Which dead letters an action applies to: ``ids``, a ``fingerprint``, or ``all``."""

    ids: frozenset[str] = frozenset()
    fingerprint: str | None = None
    all: bool = False
    older_than_ms: int | None = None  # only dead letters whose last failure is older than this

    def __post_init__(self) -> None:
        chosen = sum((bool(self.ids), self.fingerprint is not None, self.all))
        if chosen != 1:
            raise DeadLetterError("select the dead letters with exactly one of: ids, a fingerprint, or all")

    def matches(self, letter: DeadLetter, now_ms: int) -> bool:
        if self.older_than_ms is not None and now_ms - letter.last_failure_at < self.older_than_ms:
            return False
        if self.all:
            return True
        if self.fingerprint is not None:
            return letter.fingerprint == self.fingerprint
        return letter.id in self.ids


@dataclass
class ActionResult:
    """What an action did (or, in a dry run, would do)."""

    action: str
    queue: str
    dry_run: bool
    ids: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "queue": self.queue,
            "dry_run": self.dry_run,
            "count": self.count,
            "ids": self.ids,
            "skipped": self.skipped,
        }


def default_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container without passwd entry
        return "unknown"


class DeadLetters:
    """Dead-letter review and actions on one RabbitMQ vhost, with an audit log of every action."""

    def __init__(
        self,
        url: str,
        *,
        engine: Engine | None = None,
        queues: tuple[str, ...] = DOMAIN_QUEUES,
        timeout: float = 10.0,
    ) -> None:
        self.parameters = pika.URLParameters(url.split(";")[0])
        self.engine = engine
        self.queues = queues
        self.timeout = timeout

    # -- reading --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[pika.BlockingConnection]:
        try:
            connection = pika.BlockingConnection(self.parameters)
        except pika.exceptions.AMQPError as e:
            raise DeadLetterError(
                f"RabbitMQ does not answer ({type(e).__name__}): check EDUJOBS_RABBITMQ_URL"
            ) from None
        try:
            yield connection
        finally:
            with contextlib.suppress(Exception):  # closing returns every unacked message
                connection.close()

    def _exists(self, connection: pika.BlockingConnection, xq: str) -> bool:
        probe = connection.channel()
        try:
            probe.queue_declare(xq, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                return False
            raise
        probe.close()
        return True

    def _hold(self, channel: BlockingChannel, queue: str) -> list[_Held]:
        """Take every dead letter of ``queue`` unacked, in order (they return when ``channel`` closes)."""
        xq = dead_letter_queue(queue)
        held: list[_Held] = []
        while True:
            method, properties, body = channel.basic_get(xq, auto_ack=False)
            if method is None:
                return held
            letter = parse(xq, len(held), body, properties.headers or {}, properties.priority)
            held.append(_Held(letter, method.delivery_tag))

    def _check_queue(self, queue: str) -> str:
        name = canonical(queue)
        if name not in self.queues:
            raise DeadLetterError(f"unknown queue {queue!r}: expected one of {', '.join(self.queues)}")
        return name

    def read(self, queue: str) -> list[DeadLetter]:
        """Every dead letter of ``queue`` in order, none removed or reordered."""
        name = self._check_queue(queue)
        with self._connection() as connection:
            if not self._exists(connection, dead_letter_queue(name)):
                return []
            channel = connection.channel()
            return [h.letter for h in self._hold(channel, name)]

    def list(
        self,
        queue: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        since_ms: int | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """The dead letters of ``queue`` (oldest first) matching every given filter."""
        found = []
        for letter in self.read(queue):
            if actor is not None and letter.actor != actor:
                continue
            if reason is not None and letter.reason != reason:
                continue
            if fingerprint is not None and letter.fingerprint != fingerprint:
                continue
            if since_ms is not None and letter.last_failure_at < since_ms:
                continue
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
        return found

    def stats(self) -> builtins.list[dict[str, Any]]:
        """Per queue: count, oldest failure, and groups by fingerprint with a sample error."""
        result = []
        for queue in self.queues:
            letters = self.read(queue)
            groups: dict[str, dict[str, Any]] = {}
            for letter in letters:
                group = groups.setdefault(
                    letter.fingerprint,
                    {
                        "fingerprint": letter.fingerprint,
                        "count": 0,
                        "actor": letter.actor,
                        "reason": letter.reason,
                        "exception_type": letter.record.get("exception_type", ""),
                        "sample_error": redact(str(letter.record.get("error", ""))),
                        "oldest": letter.last_failure_at,
                        "newest": letter.last_failure_at,
                    },
                )
                group["count"] += 1
                group["oldest"] = min(group["oldest"], letter.last_failure_at)
                group["newest"] = max(group["newest"], letter.last_failure_at)
            result.append(
                {
                    "queue": queue,
                    "count": len(letters),
                    "oldest": min((x.last_failure_at for x in letters), default=None),
                    "groups": sorted(groups.values(), key=lambda g: -int(g["count"])),
                }
            )
        return result

    def find(self, dead_letter_id: str, queue: str | None = None) -> DeadLetter:
        """The dead letter with this id (searched in ``queue`` or in every queue)."""
        for name in (self._check_queue(queue),) if queue else self.queues:
            for letter in self.read(name):
                if letter.id == dead_letter_id:
                    return letter
        raise NotFound(f"no dead letter {dead_letter_id!r} (see `edujobs dlq list QUEUE` for the ids)")

    def show(
        self,
        dead_letter_id: str,
        *,
        queue: str | None = None,
        reveal: bool = False,
        operator: str | None = None,
    ) -> dict[str, Any]:
        """A dead letter in detail; ``reveal`` shows personal data and is audit-logged."""
        letter = self.find(dead_letter_id, queue)
        if reveal:
            self._audit(operator, "dlq.reveal", letter.queue, {"id": letter.id, "count": 1})
        return letter.detail(reveal=reveal)

    def export(self, queue: str, write: Callable[[str], Any]) -> int:
        """Write every dead letter of ``queue`` as one JSON line each (nothing removed); return how many."""
        letters = self.read(queue)
        for letter in letters:
            write(json.dumps(letter.export(), default=str) + "\n")
        return len(letters)

    # -- actions --------------------------------------------------------------------------------

    def requeue(
        self,
        queue: str,
        selection: Selection,
        *,
        dry_run: bool = False,
        operator: str | None = None,
        after_publish: Callable[[DeadLetter], None] | None = None,
    ) -> ActionResult:
        """Republish the selected dead letters to their original queue, each confirmed by RabbitMQ
        before its dead letter is removed; retries reset, ``dead_letter`` kept as
        ``options["requeued_from"]``, same message id (the ledger dedupes a duplicate).
        ``after_publish`` is called for each letter between the confirm and its removal (the CLI's
        progress bar; tests interrupt a requeue there)."""
        name = self._check_queue(queue)
        result = ActionResult("requeue", name, dry_run)
        now_ms = int(time.time() * 1000)
        with self._connection() as connection:
            if not self._exists(connection, dead_letter_queue(name)):
                return result
            channel = connection.channel()
            channel.confirm_delivery()
            for held in self._hold(channel, name):
                letter = held.letter
                if not selection.matches(letter, now_ms):
                    continue
                if letter.message is None:
                    result.skipped.append({"id": letter.id, "why": "the body is not a Dramatiq message"})
                    continue
                result.ids.append(letter.id)
                if dry_run:
                    continue
                body = requeued_body(letter, now_ms)
                try:
                    channel.basic_publish(
                        exchange="",
                        routing_key=letter.queue,
                        body=body,
                        properties=pika.BasicProperties(
                            delivery_mode=2, priority=letter.priority, message_id=letter.id
                        ),
                        mandatory=True,
                    )
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
                    raise DeadLetterError(
                        f"RabbitMQ did not accept the requeue of {letter.id} to {letter.queue!r} "
                        f"({type(e).__name__}); "
                        f"{len(result.ids) - 1} were requeued before it, the rest are untouched"
                    ) from None
                if after_publish is not None:
                    after_publish(letter)
                channel.basic_ack(held.tag)
        if not dry_run and result.count:
            self._audit(operator, "dlq.requeue", name, _details(result, selection))
        return result

    def purge(
        self,
        queue: str,
        *,
        older_than_ms: int | None = None,
        dry_run: bool = False,
        operator: str | None = None,
    ) -> ActionResult:
        """Remove the dead letters of ``queue`` (only those whose last failure is older than
        ``older_than_ms`` if given)."""
        name = self._check_queue(queue)
        selection = Selection(all=True, older_than_ms=older_than_ms)
        result = ActionResult("purge", name, dry_run)
        now_ms = int(time.time() * 1000)
        with self._connection() as connection:
            if not self._exists(connection, dead_letter_queue(name)):
                return result
            channel = connection.channel()
            for held in self._hold(channel, name):
                if selection.matches(held.letter, now_ms):
                    result.ids.append(held.letter.id)
                    if not dry_run:
                        channel.basic_ack(held.tag)
            if not dry_run:
                channel.close()  # the acks reach RabbitMQ before the audit entry says they did
        if not dry_run and result.count:
            self._audit(operator, "dlq.purge", name, _details(result, selection))
        return result

    def _audit(self, operator: str | None, action: str, target: str, details: dict[str, Any]) -> None:
        if self.engine is None:
            return
        from store import audit

        audit.record(
            self.engine, actor=operator or default_operator(), action=action, target=target, details=details
        )


def _details(result: ActionResult, selection: Selection) -> dict[str, Any]:
    return {
        "count": result.count,
        "ids": result.ids[:1000],
        "skipped": len(result.skipped),
        "selection": {
            "ids": sorted(selection.ids),
            "fingerprint": selection.fingerprint,
            "all": selection.all,
            "older_than_ms": selection.older_than_ms,
        },
    }


def requeued_body(letter: DeadLetter, now_ms: int) -> bytes:
    """The message as it is republished: same id, actor, arguments and signature; retries reset;
    the dead letter's record kept as ``options["requeued_from"]``."""
    assert letter.message is not None
    message = dict(letter.message)
    options = dict(message.get("options") or {})
    record = options.get("dead_letter") or letter.record
    for key in RESET_OPTIONS:
        options.pop(key, None)
    options["requeued_from"] = {
        "dead_letter_id": letter.id,
        "message_id": message.get("message_id"),
        "reason": record.get("reason", ""),
        "fingerprint": record.get("fingerprint", ""),
        "attempts": record.get("attempts"),
        "at": now_ms,
    }
    message["options"] = options
    message["queue_name"] = letter.queue
    return json.dumps(message, separators=(",", ":")).encode()
