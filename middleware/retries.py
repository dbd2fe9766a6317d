"""Retries: Dramatiq's retry policy, with edujobs' error classes and the provider's Retry-After.

- an exception in ``permanent`` (``PermanentError`` by default) or in the actor's ``throws`` fails the
  message at once: it is dead-lettered with reason ``permanent_error``, no retry is spent;
- an error whose ``spends_retry`` is False (``InProgressError``: another attempt holds the side
  effect) is retried after its ``retry_after`` without counting a retry;
- a transient error carrying ``retry_after`` (seconds, e.g. from HTTP 429) is retried after that
  long (plus up to 10% jitter) instead of the exponential backoff;
- anything else is retried with exponential backoff and full jitter from ``min_backoff`` up to the
  actor's ``max_backoff``, ``max_retries`` times (or while the actor's ``retry_when(retries,
  exception)`` says so, which then takes precedence, as in Dramatiq), then dead-lettered with reason
  ``retries_exhausted``; the actor's ``on_retry_exhausted`` actor, if it names one, is then sent
  ``(message.asdict(), {"retries": ..., "max_retries": ...})`` as Dramatiq does;
- an attempt interrupted by the worker's shutdown (``Shutdown``) goes back to its queue as it is
  (nacked with requeue), without spending a retry, whatever ``max_retries`` says (0 included).

A retry is a new publish (to ``Q.DQ``, with its delay): if RabbitMQ does not confirm it (the queue
refuses publishes, the connection is gone), the message is dead-lettered with reason
``requeue_failed`` instead of acked, so it is never lost between its two lives.

The retry policy options (``max_retries``, ``min_backoff``, ``max_backoff``) are read from the
message, then the actor, then this middleware: message options are covered by its signature
(``contracts.signing``), so only a holder of the key sets them. ``throws``, ``retry_when`` and
``on_retry_exhausted`` are the actor's only.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

from dramatiq import Broker, Message, MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import Retries as DramatiqRetries
from dramatiq.middleware import Shutdown

from middleware.fate import keep_traceback, mark_dead, mark_requeue

logger = logging.getLogger(__name__)

TRACEBACK_FRAMES = 30
#: The longest a retry is delayed (Dramatiq's limit too).
MAX_BACKOFF_MS = 7 * 86_400_000


class Retries(DramatiqRetries):
    """Retry transient failures with backoff; dead-letter permanent and exhausted ones."""

    def __init__(
        self,
        *,
        max_retries: int = 5,
        min_backoff: int = 15_000,
        max_backoff: int = MAX_BACKOFF_MS,
        permanent: tuple[type[BaseException], ...] = (),
        retry_when: Callable[[int, BaseException], bool] | None = None,
    ) -> None:
        super().__init__(
            max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff, retry_when=retry_when
        )
        self.permanent = permanent

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        now = int(time.time() * 1000)
        keep_traceback(message, traceback.format_exc(limit=TRACEBACK_FRAMES))
        actor = broker.get_actor(message.actor_name)
        throws = actor.options.get("throws") or ()
        if isinstance(exception, self.permanent) or (throws and isinstance(exception, throws)):
            message.options.setdefault("first_failure_at", now)
            logger.info(
                "Message %s failed permanently with %s.", message.message_id, type(exception).__name__
            )
            mark_dead(message, "permanent_error")
            return

        if isinstance(exception, Shutdown):
            # A deploy or scale-down interrupted the attempt: that is not the job's failure, so it
            # goes back as it is, for another worker, without spending one of its retries.
            logger.info("Message %s interrupted by shutdown; put back on its queue.", message.message_id)
            mark_requeue(message)
            return

        message.options.setdefault("first_failure_at", now)
        if getattr(exception, "spends_retry", True) is False:
            # "Not yet" (InProgressError: another attempt holds the side effect): look again once
            # that attempt can be judged, without counting a retry.
            delay = self._delay(message, actor.options, 0, exception)
            logger.info("Message %s waits %d ms for another attempt.", message.message_id, delay)
            self._enqueue(broker, message, delay, exception)
            return

        retries = message.options.get("retries", 0)
        message.options["retries"] = retries + 1
        message.options["requeue_timestamp"] = now
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        retry_when = actor.options.get("retry_when", self.retry_when)
        if retry_when is not None:
            exhausted = not retry_when(retries, exception)
        else:
            exhausted = max_retries is not None and retries >= max_retries
        if exhausted:
            logger.warning("Retries exceeded for message %s.", message.message_id)
            mark_dead(message, "retries_exhausted" if retries else "failed")
            self._after_exhausted(broker, message, actor.options, retries, max_retries)
            return

        self._enqueue(broker, message, self._delay(message, actor.options, retries, exception), exception)

    def _enqueue(self, broker: Broker, message: MessageProxy, delay: int, exception: BaseException) -> None:
        logger.info("Retrying message %s in %d ms.", message.message_id, delay)
        try:
            # Dramatiq's own Retries passes the proxy too: it forwards every attribute to the message.
            broker.enqueue(cast(Message[Any], message), delay=delay)
        except Exception as e:
            logger.error(
                "Could not re-enqueue message %s for its retry (%s); dead-lettering it instead.",
                message.message_id,
                type(e).__name__,
            )
            failure = f"{type(exception).__name__}: {exception}"
            error = f"{failure}; its retry could not be enqueued: {type(e).__name__}: {e}"
            mark_dead(message, "requeue_failed", type(exception).__name__, error)

    def _after_exhausted(
        self,
        broker: Broker,
        message: MessageProxy,
        options: dict[str, Any],
        retries: int,
        max_retries: int | None,
    ) -> None:
        target = options.get("on_retry_exhausted")
        if not target:
            return
        try:
            broker.get_actor(target).send(message.asdict(), {"retries": retries, "max_retries": max_retries})
        except Exception:
            # The message is dead-lettered either way; the notification of it is best effort.
            logger.exception(
                "Could not send message %s to its on_retry_exhausted actor %s.", message.message_id, target
            )

    def _delay(
        self, message: MessageProxy, options: dict[str, Any], retries: int, exception: BaseException
    ) -> int:
        if isinstance(exception, Retry) and exception.delay is not None:
            return int(exception.delay)
        retry_after = getattr(exception, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            base = int(retry_after * 1000)
            return base + random.randint(0, max(1, base // 10))
        min_backoff = message.options.get("min_backoff", options.get("min_backoff", self.min_backoff))
        max_backoff = message.options.get("max_backoff", options.get("max_backoff", self.max_backoff))
        _, delay = compute_backoff(retries, factor=min_backoff, max_backoff=min(max_backoff, MAX_BACKOFF_MS))
        return int(delay)
