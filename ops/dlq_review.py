"""Dead-letter review: read, list, count, show and export the dead letters of ``Q.XQ`` and of the
archive, with an audit log of what shows personal data (``ops.dlq`` adds requeue and purge).

RabbitMQ cannot peek at a queue, so every read takes the messages on a dedicated channel *without
acknowledging them* (``basic_get`` with manual acks) and then closes that channel: RabbitMQ puts every
unacknowledged message back in its original position, so listing never removes or reorders a dead
letter.

Dead letters about to expire are moved to the archive in storage by ``maintenance.archive_dead_letters``
(``store.dead_letter_archive``); ``archived=True`` lists, shows and exports those, read from
storage and shown exactly as live ones (same ids, same redaction). A letter archived twice (a crash
between the archive and its removal from ``Q.XQ``) is shown once.
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine

from brokers.topology import ALL_QUEUES, canonical, dead_letter_queue
from contracts.errors import EdujobsError
from contracts.signing import Keyring
from ops.dead_letter import DeadLetter, parse, redact
from store import dead_letter_archive
from store.storage import Storage, StorageError

logger = logging.getLogger(__name__)


class DeadLetterError(EdujobsError):
    """Raised when an operation on the dead letters cannot be done (bad input or broker failure)."""


class NotFound(DeadLetterError):
    """Raised when no dead letter has the given id."""


@dataclass
class _Held:
    letter: DeadLetter
    tag: int


def default_operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container without passwd entry
        return "unknown"


class DeadLetterReview:
    """Dead-letter review on one RabbitMQ vhost and its archive, with an audit log of every reveal
    and export."""

    def __init__(
        self,
        url: str,
        *,
        engine: Engine | None = None,
        queues: tuple[str, ...] = ALL_QUEUES,
        timeout: float = 10.0,
        storage: Storage | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.parameters = pika.URLParameters(url.split(";")[0])
        self.engine = engine
        self.queues = queues
        self.timeout = timeout
        self._storage = storage
        #: The keys a requeue signs the message's new delivery state with (default: the settings').
        self.keyring = keyring

    @property
    def storage(self) -> Storage:
        """Where the archive is: the one given, else the configured storage (``EDUJOBS_STORAGE_URL``)."""
        if self._storage is None:
            from store.storage import get_storage

            self._storage = get_storage()
        return self._storage

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
            headers = properties.headers if isinstance(properties.headers, dict) else {}
            letter = parse(xq, len(held), body, headers, properties.priority, properties.timestamp)
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

    def _read_archive(self, queue: str) -> Iterator[DeadLetter]:
        seen: set[tuple[bytes, Any, Any]] = set()
        try:
            for position, stored in enumerate(dead_letter_archive.read(self.storage, queue)):
                # The same letter archived twice is one letter, shown once.
                same = (hashlib.sha1(stored.body).digest(), stored.timestamp, repr(stored.headers))
                if same in seen:
                    continue
                seen.add(same)
                letter = parse(
                    queue, position, stored.body, stored.headers, stored.priority, stored.timestamp
                )
                letter.archived = {"archived_at": stored.archived_at, "file": stored.key}
                yield letter
        except StorageError as e:
            raise DeadLetterError(f"the dead-letter archive cannot be read: {e}") from None

    def list(
        self,
        queue: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        since_ms: int | None = None,
        fingerprint: str | None = None,
        limit: int | None = None,
        archived: bool = False,
    ) -> list[DeadLetter]:
        """The dead letters of ``queue`` (oldest first) matching every given filter; with
        ``archived``, those of its archive."""
        found = []
        letters = self._read_archive(self._check_queue(queue)) if archived else self.read(queue)
        for letter in letters:
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
                    "archived": self._archived_count(queue),
                }
            )
        return result

    def _archived_count(self, queue: str) -> int | None:
        """How many letters the queue's archive holds (None, logged, if storage cannot tell)."""
        try:
            return dead_letter_archive.count(self.storage, queue)
        except Exception as e:  # the live figures matter more than the archive's: never fail stats
            logger.warning("Cannot count the archived dead letters of %s: %s", queue, e)
            return None

    def find(self, dead_letter_id: str, queue: str | None = None, *, archived: bool = False) -> DeadLetter:
        """The dead letter with this id (searched in ``queue`` or in every queue; with
        ``archived``, in the archive)."""
        for name in (self._check_queue(queue),) if queue else self.queues:
            letters = self._read_archive(name) if archived else iter(self.read(name))
            for letter in letters:
                if letter.id == dead_letter_id:
                    return letter
        where = "archived dead letter" if archived else "dead letter"
        hint = "list QUEUE --archived" if archived else "list QUEUE"
        raise NotFound(f"no {where} {dead_letter_id!r} (see `edujobs dlq {hint}` for the ids)")

    def show(
        self,
        dead_letter_id: str,
        *,
        queue: str | None = None,
        reveal: bool = False,
        operator: str | None = None,
        archived: bool = False,
    ) -> dict[str, Any]:
        """A dead letter in detail (with ``archived``, one of the archive); ``reveal`` shows
        personal data and is audit-logged."""
        letter = self.find(dead_letter_id, queue, archived=archived)
        if reveal:
            details = {"id": letter.id, "count": 1, **({"archived": True} if archived else {})}
            self._audit(operator, "dlq.reveal", letter.queue, details)
        return letter.detail(reveal=reveal)

    def export(
        self,
        queue: str,
        write: Callable[[str], Any],
        *,
        reveal: bool = False,
        destination: str = "",
        operator: str | None = None,
        archived: bool = False,
    ) -> int:
        """Write every dead letter of ``queue`` as one JSON line each (nothing removed); return how
        many. Personal data is redacted unless ``reveal``; the export is audited either way (who, how
        many, to where), even when writing fails halfway."""
        name = self._check_queue(queue)
        written = 0
        exported = {"archived": True} if archived else {}
        try:
            for letter in self._read_archive(name) if archived else self.read(name):
                write(json.dumps(letter.export(reveal=reveal), default=str) + "\n")
                written += 1
        except BaseException as e:
            details = {"count": written, "file": destination, "revealed": reveal, "failed": describe_error(e)}
            self._audit_even_if_failing(operator, "dlq.export", name, details | exported)
            raise
        details = {"count": written, "file": destination, "revealed": reveal}
        self._audit(operator, "dlq.export", name, details | exported)
        return written

    def _audit(self, operator: str | None, action: str, target: str, details: dict[str, Any]) -> None:
        if self.engine is None:
            return
        from store import audit

        audit.record(
            self.engine, actor=operator or default_operator(), action=action, target=target, details=details
        )

    def _audit_even_if_failing(
        self, operator: str | None, action: str, target: str, details: dict[str, Any]
    ) -> None:
        """Audit while an exception may be on its way up: a failing audit is logged, not raised,
        so that the caller sees the error that interrupted the action."""
        try:
            self._audit(operator, action, target, details)
        except Exception:
            logger.exception("Could not write the audit entry of %s on %s: %s", action, target, details)


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
