"""Retries: Dramatiq's retry policy, with edujobs' error classes and the provider's Retry-After.

- an exception in ``permanent`` (``PermanentError`` by default) or in the actor's ``throws`` fails the
  message at once: it is dead-lettered with reason ``permanent_error``, no retry is spent;
- a transient error carrying ``retry_after`` (seconds, e.g. from HTTP 429) is retried after that
  long (plus up to 10% jitter) instead of the exponential backoff;
- anything else is retried with exponential backoff and full jitter from ``min_backoff`` up to the
  actor's ``max_backoff``, ``max_retries`` times, then dead-lettered with reason ``retries_exhausted``.

An attempt interrupted by the worker's shutdown (``Shutdown``) is requeued without spending a retry,
and so is one that raised an error whose ``spends_retry`` is False (``InProgressError``: another
attempt holds the side effect), after its ``retry_after``.

It stamps ``first_failure_at`` into the message options so the dead letter can say when trouble began.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from typing import Any, cast

from dramatiq import Broker, Message, MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import Retries as DramatiqRetries
from dramatiq.middleware import Shutdown

logger = logging.getLogger(__name__)

TRACEBACK_FRAMES = 30


class Retries(DramatiqRetries):
    """Retry transient failures with backoff; dead-letter permanent and exhausted ones."""

    def __init__(
        self,
        *,
        max_retries: int = 5,
        min_backoff: int = 15_000,
        max_backoff: int = 7 * 86_400_000,
        permanent: tuple[type[BaseException], ...] = (),
    ) -> None:
        super().__init__(max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff)
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
        message.options.setdefault("first_failure_at", now)
        message.options["traceback"] = traceback.format_exc(limit=TRACEBACK_FRAMES)
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws") or ()
        if isinstance(exception, self.permanent) or (throws and isinstance(exception, throws)):
            logger.info(
                "Message %s failed permanently with %s.", message.message_id, type(exception).__name__
            )
            message.options["dead_letter_reason"] = "permanent_error"
            message.fail()
            return

        if isinstance(exception, Shutdown):
            # A deploy or scale-down interrupted the attempt: that is not the job's failure, so it
            # runs again shortly without spending one of its retries.
            logger.info(
                "Message %s interrupted by shutdown; requeued without using a retry.", message.message_id
            )
            broker.enqueue(cast(Message[Any], message), delay=1000)
            return

        if getattr(exception, "spends_retry", True) is False:
            # "Not yet" (InProgressError: another attempt holds the side effect): look again once
            # that attempt can be judged, without counting a retry.
            delay = self._delay(message, actor.options, 0, exception)
            logger.info("Message %s waits %d ms for another attempt.", message.message_id, delay)
            broker.enqueue(cast(Message[Any], message), delay=delay)
            return

        retries = message.options.setdefault("retries", 0)
        message.options["retries"] = retries + 1
        message.options["requeue_timestamp"] = now
        max_retries = message.options.get("max_retries", actor.options.get("max_retries", self.max_retries))
        if max_retries is not None and retries >= max_retries:
            logger.warning("Retries exceeded for message %s.", message.message_id)
            message.options["dead_letter_reason"] = "retries_exhausted" if retries else "failed"
            message.fail()
            return

        delay = self._delay(message, actor.options, retries, exception)
        logger.info("Retrying message %s in %d ms.", message.message_id, delay)
        # Dramatiq's own Retries passes the proxy too: it forwards every attribute to the message.
        broker.enqueue(cast(Message[Any], message), delay=delay)

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
        _, delay = compute_backoff(retries, factor=min_backoff, max_backoff=min(max_backoff, 7 * 86_400_000))
        return int(delay)
