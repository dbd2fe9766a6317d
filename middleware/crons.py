"""Sentry Crons check-ins that follow the job, not its enqueue.

The scheduler enqueues each fire of a schedule with the idempotency key
``schedule:<name>:<fire time>`` and the options ``schedule`` (the name) and ``schedule_monitor`` (the
monitor: its crontab, time zone and check-in margin in minutes). A worker running that message checks
in to the monitor ``edujobs-<name>``:

- ``in_progress`` when an attempt starts (after every guard of the stack let it through: a message
  delayed by an open circuit breaker, cancelled or refused has not started), carrying the monitor's
  configuration, so Sentry creates or updates the monitor from it and, knowing the schedule and the
  margin, itself reports the fire as *missed* when no ``in_progress`` comes in time (the job never
  started: workers down, queue paused, backlog);
- ``ok`` with the attempt's duration when it succeeds;
- ``error`` with the duration when it fails for good: a permanent error, retries exhausted, or a
  message dead-lettered before it could run (bad signature, invalid, too old: ``after_dead_letter``
  covers those the consumer refuses on receipt).

A failed attempt that will be retried sends nothing: the check-in stays in progress, and the next
attempt's ``in_progress`` (the same check-in) then its ``ok`` or ``error`` close it. Every check-in of
one fire has the same id, derived from the fire's idempotency key (``check_in_id``), so Sentry pairs
them whichever worker runs which attempt. The monitor's ``max_runtime`` is the actor's whole life at
worst (every attempt at its time limit plus the longest backoff between them), so a job that hangs
or vanishes between attempts shows as a timeout rather than an ``ok`` nobody sent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import sentry_sdk
from dramatiq import Broker, Message, MessageProxy
from dramatiq.middleware import Middleware

from middleware.sentry import capture_check_in

logger = logging.getLogger(__name__)

SCHEDULE_OPTION = "schedule"
MONITOR_OPTION = "schedule_monitor"
#: Sentry refuses a ``max_runtime`` above 28 days.
MAX_RUNTIME_MINUTES = 28 * 24 * 60
_CHECK_IN_NAMESPACE = uuid.UUID("3f8c1c52-6a51-4a7e-9d5e-0b1f3c6d2e77")


def monitor_slug(schedule: str) -> str:
    """The Sentry Crons monitor of a schedule."""
    return f"edujobs-{schedule}"


def check_in_id(fire_key: str) -> str:
    """The check-in id of one fire (its idempotency key): the same for every attempt and worker."""
    return uuid.uuid5(_CHECK_IN_NAMESPACE, fire_key).hex


def fire_of(message: Message[Any] | MessageProxy) -> tuple[str, str] | None:
    """(schedule, fire key) when ``message`` is a schedule's fire, else None."""
    options = message.options
    schedule, key = options.get(SCHEDULE_OPTION), options.get("idempotency_key")
    if type(schedule) is not str or type(key) is not str or not key.startswith(f"schedule:{schedule}:"):
        return None
    return schedule, key


def max_runtime_minutes(
    options: dict[str, Any], *, time_limit: int, max_retries: int, max_backoff: int
) -> int:
    """The longest a fire may take from its first start to its end, in minutes: every attempt at the
    time limit, and the longest backoff between them (actor options, else the defaults given)."""
    limit = int(options.get("time_limit") or time_limit)
    retries = int(options.get("max_retries", max_retries) or 0)
    backoff = int(options.get("max_backoff") or max_backoff)
    total_ms = limit * (retries + 1) + backoff * retries
    return max(1, min(MAX_RUNTIME_MINUTES, math.ceil(total_ms / 60_000)))


class ScheduleCheckIns(Middleware):
    """Checks a schedule's fire in to Sentry Crons as its job starts and ends (see the module)."""

    def __init__(
        self,
        *,
        default_time_limit: int = 600_000,
        default_max_retries: int = 5,
        default_max_backoff: int = 3_600_000,
        max_pending: int = 1000,
    ) -> None:
        self.default_time_limit = default_time_limit
        self.default_max_retries = default_max_retries
        self.default_max_backoff = default_max_backoff
        self.max_pending = max_pending
        #: message id -> (monotonic start, fire key, schedule) of attempts running in this process
        self._running: OrderedDict[str, tuple[float, str, str]] = OrderedDict()
        #: message ids whose error this process sent already (their dead letter then sends none)
        self._failed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        fire = fire_of(message)
        if fire is None or not sentry_sdk.get_client().is_active():
            return
        schedule, key = fire
        with self._lock:
            self._running[message.message_id] = (time.monotonic(), key, schedule)
            while len(self._running) > self.max_pending:
                self._running.popitem(last=False)
        monitor = message.options.get(MONITOR_OPTION)
        config: dict[str, Any] = {}
        if isinstance(monitor, dict) and isinstance(monitor.get("crontab"), str):
            actor = broker.actors.get(message.actor_name)
            config = {
                "schedule": monitor["crontab"],
                "timezone": monitor.get("timezone"),
                "checkin_margin_minutes": monitor.get("checkin_margin"),
                "max_runtime_minutes": max_runtime_minutes(
                    actor.options if actor is not None else {},
                    time_limit=self.default_time_limit,
                    max_retries=self.default_max_retries,
                    max_backoff=self.default_max_backoff,
                ),
            }
        self._check_in(schedule, key, "in_progress", **config)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            running = self._running.pop(message.message_id, None)
        if running is None:
            return
        started, key, schedule = running
        duration = time.monotonic() - started
        if exception is None and not message.failed:
            self._check_in(schedule, key, "ok", duration=duration)
        elif message.failed:
            self._fail(message.message_id, schedule, key, duration)
        # else: retried (or put back by a shutdown): still in progress; the next attempt closes it.

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            running = self._running.pop(message.message_id, None)
        if not message.failed:
            return  # delayed by a breaker, cancelled: it did not run, and Sentry sees no ok
        fire = fire_of(message)
        if fire is None or not sentry_sdk.get_client().is_active():
            return
        duration = time.monotonic() - running[0] if running is not None else None
        self._fail(message.message_id, fire[0], fire[1], duration)

    def after_dead_letter(
        self, broker: Broker, queue_name: str, record: dict[str, Any], message: Message[Any] | None
    ) -> None:
        # A fire dead-lettered without an attempt here (refused on receipt: bad signature, not
        # valid) is an error too; one whose failure was checked in already is not sent twice.
        fire = None if message is None else fire_of(message)
        if message is None or fire is None or not sentry_sdk.get_client().is_active():
            return
        with self._lock:
            reported = message.message_id in self._failed
            self._failed.pop(message.message_id, None)
        if not reported:
            self._check_in(fire[0], fire[1], "error")

    def _fail(self, message_id: str, schedule: str, key: str, duration: float | None) -> None:
        with self._lock:
            self._failed[message_id] = None
            while len(self._failed) > self.max_pending:
                self._failed.popitem(last=False)
        self._check_in(schedule, key, "error", duration=duration)

    @staticmethod
    def _check_in(name: str, key: str, status: Any, /, **config: Any) -> None:
        try:
            capture_check_in(monitor_slug(name), status, check_in_id=check_in_id(key), **config)
        except Exception:
            logger.warning("Could not check schedule %s in to Sentry (%s).", name, status, exc_info=True)
