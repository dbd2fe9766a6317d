"""Dead-letter actions: requeue and purge the dead letters of ``Q.XQ`` (``ops.dlq_review`` reads
them: list, show, export, stats, the archive).

One implementation behind the ``edujobs dlq`` commands and the HTTP API (``ops.dead_letter`` reads
one dead letter and redacts what it shows).

Actions work on the reading's channel (letters held unacknowledged, ``ops.dlq_review``): a requeue
republishes the selected dead letters to their original queue with a publisher confirm and only then
acks (removes) the dead letter; a purge acks the selected ones; every other message goes back
untouched when the channel closes. A crash between the confirm and the ack leaves the dead letter in
place and the message requeued, which is at worst a duplicate with the same message id, deduplicated
by the ledger: nothing is ever lost.

Every requeue, purge, export and reveal is audited; an action that fails halfway is audited too,
with what it did before failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from brokers.settings import get_settings
from brokers.topology import dead_letter_queue
from contracts.signing import SignatureError
from ops.dead_letter import REDACTED, DeadLetter, redact, requeued_body
from ops.dlq_review import DeadLetterError, DeadLetterReview, NotFound, default_operator, describe_error

__all__ = [
    "REDACTED",
    "ActionResult",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterReview",
    "DeadLetters",
    "NotFound",
    "Selection",
    "default_operator",
    "redact",
]


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


class DeadLetters(DeadLetterReview):
    """Dead-letter review and actions on one RabbitMQ vhost, with an audit log of every action."""

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
        progress bar; tests interrupt a requeue there). If the requeue fails halfway, the audit
        entry says how many were requeued before it failed and which one was left in both places."""
        name = self._check_queue(queue)
        result = ActionResult("requeue", name, dry_run)
        now_ms = int(time.time() * 1000)
        keyring = self.keyring or get_settings().keyring()
        in_both: list[str] = []  # published but not removed: the failure struck between the two
        try:
            with self._connection() as connection:
                if not self._exists(connection, dead_letter_queue(name)):
                    return result
                channel = connection.channel()
                channel.confirm_delivery()
                for held in self._hold(channel, name):
                    letter = held.letter
                    if not selection.matches(letter, now_ms):
                        continue
                    if letter.problem is not None:
                        result.skipped.append({"id": letter.id, "why": redact(letter.problem)})
                        continue
                    try:
                        body = requeued_body(letter.for_requeue(), now_ms, keyring)
                    except SignatureError as e:
                        why = f"its signature does not check out with the accepted keys ({e})"
                        result.skipped.append({"id": letter.id, "why": why + ": it would die again"})
                        continue
                    if dry_run:
                        result.ids.append(letter.id)
                        continue
                    self._republish(channel, letter, body, now_ms, done=result.count)
                    in_both.append(letter.id)
                    if after_publish is not None:
                        after_publish(letter)
                    channel.basic_ack(held.tag)
                    in_both.remove(letter.id)
                    result.ids.append(letter.id)
        except BaseException as e:
            if not dry_run and (result.count or in_both):
                details = {**_details(result, selection), "failed": describe_error(e), "in_both": in_both}
                self._audit_even_if_failing(operator, "dlq.requeue", name, details)
            raise
        if not dry_run and result.count:
            self._audit(operator, "dlq.requeue", name, _details(result, selection))
        return result

    def _republish(
        self, channel: BlockingChannel, letter: DeadLetter, body: bytes, now_ms: int, *, done: int
    ) -> None:
        try:
            channel.basic_publish(
                exchange="",
                routing_key=letter.queue,
                body=body,
                properties=pika.BasicProperties(
                    delivery_mode=2,
                    priority=letter.priority,
                    message_id=letter.id,
                    # Seconds, as AMQP has it: the oldest-message-age gauge reads it back.
                    timestamp=now_ms // 1000,
                ),
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as e:
            raise DeadLetterError(
                f"RabbitMQ did not accept the requeue of {letter.id} to {letter.queue!r} "
                f"({type(e).__name__}); {done} were requeued before it, the rest are untouched"
            ) from None

    def purge(
        self,
        queue: str,
        *,
        fingerprint: str | None = None,
        older_than_ms: int | None = None,
        dry_run: bool = False,
        operator: str | None = None,
    ) -> ActionResult:
        """Remove the dead letters of ``queue``: all, or those of one cause (``fingerprint``), and of
        those only the ones whose last failure is older than ``older_than_ms`` if given. If the purge
        fails halfway, the audit entry says how many removals were sent before it failed."""
        name = self._check_queue(queue)
        selection = Selection(all=fingerprint is None, fingerprint=fingerprint, older_than_ms=older_than_ms)
        result = ActionResult("purge", name, dry_run)
        now_ms = int(time.time() * 1000)
        try:
            with self._connection() as connection:
                if not self._exists(connection, dead_letter_queue(name)):
                    return result
                channel = connection.channel()
                for held in self._hold(channel, name):
                    if selection.matches(held.letter, now_ms):
                        if not dry_run:
                            channel.basic_ack(held.tag)
                        result.ids.append(held.letter.id)
                if not dry_run:
                    channel.close()  # the acks reach RabbitMQ before the audit entry says they did
        except BaseException as e:
            if not dry_run and result.count:
                # Acks are not confirmed one by one: up to ``count`` of them may have been applied.
                details = {**_details(result, selection), "failed": describe_error(e)}
                self._audit_even_if_failing(operator, "dlq.purge", name, details)
            raise
        if not dry_run and result.count:
            self._audit(operator, "dlq.purge", name, _details(result, selection))
        return result


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
