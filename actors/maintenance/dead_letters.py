"""Dead-letter archival: move the letters about to expire from ``Q.XQ`` to storage.

``Q.XQ`` drops a letter ``EDUJOBS_DEAD_LETTER_TTL_DAYS`` after it arrived (RabbitMQ's queue TTL).
Every day, ``maintenance.archive_dead_letters`` takes the letters older than the TTL less
``EDUJOBS_DEAD_LETTER_ARCHIVE_MARGIN_DAYS`` (2 by default), writes them to the archive
(``store.dead_letter_archive``) and only then removes them from ``Q.XQ``, so that none expires
unseen: a crash after the write and before the removal archives them twice, never loses one.

How old a letter is: its AMQP ``timestamp``, which edujobs sets when it dead-letters (seconds).
RabbitMQ counts the TTL from the letter's arrival, which no property tells, so a timestamp is
trusted only when it is not in the future; a letter without a usable one is taken as old enough and
archived at once (it can be read there), since nothing says when it will expire. ``Q.XQ`` is
first-in first-out, so the reading stops at the first letter that is too young: every letter behind
it arrived later. Letters are taken unacknowledged on a channel of the run's own; the ones not
archived go back in place when it closes, as in ``ops.dlq``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from brokers.topology import ALL_QUEUES, dead_letter_queue
from contracts.errors import TransientError
from store import dead_letter_archive as archive
from store.storage import Storage

logger = logging.getLogger(__name__)

#: Letters per archive file at most: bounds the run's memory and how long letters stay unacked.
BATCH = 5000
#: Bytes of letters per archive file at most (before compression).
BATCH_BYTES = 64 * 1024 * 1024


class ArchiveError(TransientError):
    """Raised when RabbitMQ cannot be read during an archival (retried: nothing was removed that
    was not archived)."""


@dataclass
class QueueArchive:
    """What one run did for one queue."""

    queue: str
    archived: int = 0
    kept: int = 0  # letters looked at and left, too young (at most one: reading stops there)
    files: list[str] = field(default_factory=list)


def archive_dead_letters(
    amqp_url: str,
    storage: Storage,
    *,
    ttl_ms: int,
    margin_ms: int,
    queues: Sequence[str] = ALL_QUEUES,
    now_ms: int | None = None,
    batch: int = BATCH,
    after_write: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Archive the dead letters of each queue older than ``ttl_ms - margin_ms``, then remove them
    from ``Q.XQ``; return per queue how many and which files. ``after_write`` is called with each
    file's key between its write and the removal of its letters (tests interrupt a run there).
    With ``dry_run``, count the letters it would archive, write nothing and remove none (every
    letter read goes back in place when the run's channel closes)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    threshold = max(ttl_ms - margin_ms, 0)
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split(";")[0]))
    except pika.exceptions.AMQPError as e:
        raise ArchiveError(f"RabbitMQ does not answer ({type(e).__name__})") from None
    results = []
    try:
        for queue in queues:
            result = QueueArchive(queue)
            _archive_queue(connection.channel(), storage, result, now, threshold, batch, after_write, dry_run)
            results.append(result)
    except pika.exceptions.AMQPError as e:
        raise ArchiveError(f"RabbitMQ failed during the archival ({type(e).__name__}: {e})") from None
    finally:
        with contextlib.suppress(Exception):  # closing returns every letter not archived
            connection.close()
    for result in results:
        if result.archived and not dry_run:
            logger.info("Archived %d dead letters of %s to %s.", result.archived, result.queue, result.files)
    return {
        "dry_run": dry_run,
        "threshold_days": threshold / 86_400_000,
        "archived": sum(r.archived for r in results),
        "queues": {r.queue: {"archived": r.archived, "files": r.files} for r in results},
    }


def _archive_queue(
    channel: BlockingChannel,
    storage: Storage,
    result: QueueArchive,
    now: int,
    threshold: int,
    batch: int,
    after_write: Callable[[str], None] | None,
    dry_run: bool = False,
) -> None:
    xq = dead_letter_queue(result.queue)
    held: list[tuple[int, archive.ArchivedLetter]] = []
    size = 0
    while True:
        try:
            method, properties, body = channel.basic_get(xq, auto_ack=False)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 404 and not held:
                return  # no Q.XQ (never declared): nothing to archive
            raise
        if method is None:
            break
        arrived_ms = _arrival_ms(properties.timestamp, now)
        if arrived_ms is not None and now - arrived_ms < threshold:
            result.kept += 1
            break  # first in, first out: every letter behind this one is younger
        if dry_run:
            result.archived += 1  # left unacknowledged: it goes back when the channel closes
            continue
        headers = properties.headers if isinstance(properties.headers, dict) else {}
        letter = archive.archived_letter(
            result.queue, body, headers, properties.priority, properties.timestamp, now
        )
        held.append((method.delivery_tag, letter))
        size += len(body)
        if len(held) >= batch or size >= BATCH_BYTES:
            _flush(channel, storage, result, held, now, after_write)
            held, size = [], 0
    if held:
        _flush(channel, storage, result, held, now, after_write)
    channel.close()  # the removals reach RabbitMQ; the young letter goes back in place


def _flush(
    channel: BlockingChannel,
    storage: Storage,
    result: QueueArchive,
    held: list[tuple[int, archive.ArchivedLetter]],
    now: int,
    after_write: Callable[[str], None] | None,
) -> None:
    key = archive.write(storage, result.queue, [letter for _, letter in held], now_ms=now)
    if after_write is not None:
        after_write(key)
    # Only now that the file is durable are the letters removed; one ack covers them all.
    channel.basic_ack(held[-1][0], multiple=True)
    result.archived += len(held)
    result.files.append(key)


def _arrival_ms(timestamp: Any, now: int) -> int | None:
    """When the letter was dead-lettered, from its AMQP timestamp (seconds), if it can be trusted."""
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp <= 0:
        return None
    arrived = timestamp * 1000
    return arrived if arrived <= now else None
