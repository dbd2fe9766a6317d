"""What happens to a message after its attempt, said by middleware to the broker's consumer.

A hook that decides a message's fate marks the message proxy (the object Dramatiq hands every hook
and then to ``Consumer.ack`` / ``Consumer.nack``), never its ``options``: options travel with the
message, and a fate written there could be forged by whoever publishes to RabbitMQ, or outlive the
attempt that decided it. ``brokers.consumer`` reads these marks:

- ``mark_dead``: the message is failed and dead-lettered with this reason (the record is always
  built by the worker that dead-letters it, from these marks and the attempt's exception);
- ``mark_requeue``: the message goes back to its queue as it is (nack with requeue), neither acked
  nor dead-lettered (an attempt interrupted by the worker's shutdown);
- ``keep_traceback``: the attempt's traceback, for the dead letter's record.
"""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq import MessageProxy
from dramatiq.middleware import SkipMessage

#: Set on a ``Message`` copied from a received one (``brokers.consumer.EdujobsMessage.copy``): the
#: consumer that received the original, so that a copy is never taken for a new message.
ORIGIN = "edujobs_origin"
DEAD = "edujobs_dead"
REQUEUE = "edujobs_requeue"
TRACEBACK = "edujobs_traceback"


@dataclass(frozen=True)
class Death:
    """Why a message is dead-lettered: a reason from ``brokers.dlq.REASONS``, and when the reason is
    not an exception of the attempt, the exception type and error text to record instead."""

    reason: str
    exception_type: str | None = None
    error: str | None = None


def mark_dead(
    message: MessageProxy, reason: str, exception_type: str | None = None, error: str | None = None
) -> None:
    """Fail ``message``: it is dead-lettered with ``reason`` instead of acked."""
    setattr(message, DEAD, Death(reason, exception_type, error))
    message.fail()


def death_of(message: MessageProxy) -> Death | None:
    value = vars(message).get(DEAD)
    return value if isinstance(value, Death) else None


def mark_requeue(message: MessageProxy) -> None:
    """Put ``message`` back on its queue as it is, instead of acking it."""
    setattr(message, REQUEUE, True)


def requeued(message: MessageProxy) -> bool:
    return vars(message).get(REQUEUE) is True


def keep_traceback(message: MessageProxy, text: str) -> None:
    setattr(message, TRACEBACK, text)


def traceback_of(message: MessageProxy) -> str:
    value = vars(message).get(TRACEBACK)
    return value if isinstance(value, str) else ""


def reject(message: MessageProxy, reason: str, exception_type: str, error: str) -> None:
    """Dead-letter ``message`` from a ``before_process_message`` hook, with a reason and error."""
    mark_dead(message, reason, exception_type, error)
    raise SkipMessage(error)
