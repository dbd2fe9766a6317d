"""Sentry: one event per dead-lettered message, one per opened circuit breaker, scrubbed.

``init_sentry`` starts sentry-sdk with its Dramatiq integration, which must happen before the broker
is built (the integration patches ``Broker.__init__`` to add its middleware). That integration gives
each message an isolation scope, a transaction and a ``dramatiq`` context; it also reports every
failed *attempt* (and Dramatiq's worker logs each one at ERROR, which the logging integration turns
into an event too). ``before_send`` drops those per-attempt events; instead the ``SentryReporter``
middleware reports each message once, when it is dead-lettered (``after_dead_letter``, called by
``EdujobsBroker`` after the dead letter is confirmed), whatever the reason: retries exhausted,
permanent error, bad signature, invalid or undecodable payload. Its events are grouped by actor and
exception type (fingerprint ``["dramatiq", actor, exception_type]``) and carry the actor, queue,
reason and dead-letter fingerprint as tags, the attempts and failure times as extra, the stack trace
of the last attempt when there was one, and never the message's arguments.

Every event goes through ``middleware.scrubbing.scrub_event`` in ``before_send`` (the arguments of
a dead message are redacted from its text too). ``data_collection`` is not used: setting it turns
Sentry's own ``event_scrubber`` off.

``report_breaker_transition`` reports a circuit breaker's opening once; ``capture_check_in`` sends
Sentry Crons check-ins for scheduled jobs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import sentry_sdk
from dramatiq import Broker, Message, MessageProxy, Worker
from dramatiq.middleware import Middleware
from sentry_sdk.crons import capture_checkin
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.utils import event_from_exception

from middleware.scrubbing import FILTERED, argument_values, scrub_event

if TYPE_CHECKING:
    from sentry_sdk._types import Breadcrumb, BreadcrumbHint, Event, Hint, MonitorConfig

logger = logging.getLogger(__name__)

#: ``mechanism.type`` of the exceptions in dead-letter events.
DEAD_LETTER_MECHANISM = "edujobs.dead_letter"
#: Hint key under which the dead message's argument values reach ``before_send`` (never the event).
ARGUMENTS_HINT = "edujobs_argument_values"
#: Actor label of a dead letter whose body could not be decoded.
UNDECODABLE = "(undecodable)"

_WORKER_LOGGER = "dramatiq.worker.WorkerThread"


def init_sentry(
    *,
    dsn: str,
    environment: str | None = None,
    release: str | None = None,
    server_name: str | None = None,
    traces_sample_rate: float = 0.0,
    shutdown_timeout: float = 2.0,
) -> bool:
    """Start sentry-sdk for this process; call it before the broker is built.

    Returns False when Sentry already runs with this DSN (``brokers.setup`` may be called twice).
    Local variables are not collected: in an actor's frames they are its arguments.
    """
    client = sentry_sdk.get_client()
    if client.is_active() and client.options.get("dsn") == dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        server_name=server_name,
        traces_sample_rate=traces_sample_rate or None,
        # send_default_pii stays at its default (off); data_collection is not set: it disables
        # the event_scrubber.
        include_local_variables=False,
        integrations=[DramatiqIntegration()],
        before_send=before_send,
        before_send_transaction=before_send_transaction,
        before_breadcrumb=before_breadcrumb,
        shutdown_timeout=shutdown_timeout,
    )
    return True


# -- filtering and scrubbing --------------------------------------------------------------------


def is_attempt_event(event: dict[str, Any]) -> bool:
    """Whether ``event`` reports one failed attempt of a message (Sentry's Dramatiq middleware, or
    Dramatiq's "Failed to process message" log line): the dead-letter event reports it once instead."""
    for value in (event.get("exception") or {}).get("values") or ():
        if ((value or {}).get("mechanism") or {}).get("type") == DramatiqIntegration.identifier:
            return True
    logentry = event.get("logentry") or {}
    return event.get("logger") == _WORKER_LOGGER and str(logentry.get("message", "")).startswith(
        "Failed to process message"
    )


def _safe_arg(value: Any) -> Any:
    # Dramatiq logs messages with %s, which prints their arguments: log the actor and id instead.
    if isinstance(value, Message | MessageProxy):
        return f"{value.actor_name}[{value.message_id}]"
    return value


def safe_log_message(record: logging.LogRecord) -> tuple[str, list[Any]] | None:
    args = record.args
    if not args:
        return None
    if isinstance(args, dict):
        if not any(isinstance(v, Message | MessageProxy) for v in args.values()):
            return None
        safe_map = {k: _safe_arg(v) for k, v in args.items()}
        try:
            return str(record.msg) % safe_map, list(safe_map.values())
        except (TypeError, ValueError, KeyError):
            return FILTERED, []
    if not any(isinstance(v, Message | MessageProxy) for v in args):
        return None
    safe = tuple(_safe_arg(v) for v in args)
    try:
        return str(record.msg) % safe, list(safe)
    except (TypeError, ValueError):
        return FILTERED, []


def before_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    """Log breadcrumbs that print a Dramatiq message keep its actor and id, not its arguments."""
    record = (hint or {}).get("log_record")
    if isinstance(record, logging.LogRecord):
        safe = safe_log_message(record)
        if safe is not None:
            crumb["message"] = safe[0]
    return crumb


def before_send(event: Event, hint: Hint) -> Event | None:
    """Drop per-attempt events; scrub the rest (check-ins and other typed events pass untouched)."""
    data = cast(dict[str, Any], event)
    if data.get("type") not in (None, "default", "error"):
        return event
    if is_attempt_event(data):
        return None
    record = (hint or {}).get("log_record")
    logentry = data.get("logentry")
    if isinstance(record, logging.LogRecord) and isinstance(logentry, dict):
        safe = safe_log_message(record)
        if safe is not None:
            logentry["formatted"], logentry["params"] = safe
    return cast("Event", scrub_event(data, (hint or {}).get(ARGUMENTS_HINT, ())))


def before_send_transaction(event: Event, hint: Hint) -> Event | None:
    """Transactions carry the ``dramatiq`` context and span data too: scrub them the same way."""
    return cast("Event", scrub_event(cast(dict[str, Any], event)))


# -- dead letters -------------------------------------------------------------------------------


def _iso(ms: Any) -> str | None:
    if not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def dead_letter_event(
    queue_name: str,
    record: dict[str, Any],
    message: Message[Any] | None,
    exception: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Sentry event of one dead letter; ``exception`` is the last attempt's, when known."""
    actor = message.actor_name if message is not None else UNDECODABLE
    exception_type = record.get("exception_type") or record["reason"]
    extra: dict[str, Any] = {
        "message_id": message.message_id if message is not None else None,
        "attempts": record.get("attempts"),
        "first_failure_at": _iso(record.get("first_failure_at")),
        "last_failure_at": _iso(record.get("last_failure_at")),
        "worker": record.get("worker"),
        "dead_letter_queue": f"{queue_name}.XQ",
    }
    if exception is None:
        exception = {
            "values": [
                {
                    "type": exception_type,
                    "value": record.get("error") or record["reason"],
                    "mechanism": {"type": DEAD_LETTER_MECHANISM, "handled": False},
                }
            ]
        }
        if record.get("traceback"):
            extra["traceback"] = record["traceback"]
    return {
        "level": "error",
        "logger": "edujobs.dead_letters",
        "transaction": actor,
        "fingerprint": ["dramatiq", actor, exception_type],
        "tags": {
            "actor": actor,
            "queue": queue_name,
            "reason": record["reason"],
            "exception_type": exception_type,
            "fingerprint": record.get("fingerprint", ""),
        },
        "extra": extra,
        "exception": exception,
    }


def _exception_payload(exception: BaseException) -> dict[str, Any] | None:
    client = sentry_sdk.get_client()
    event, _ = event_from_exception(
        exception,
        client_options=client.options,
        mechanism={"type": DEAD_LETTER_MECHANISM, "handled": False},
    )
    payload = event.get("exception")
    return cast(dict[str, Any], payload) if payload else None


class SentryReporter(Middleware):
    """Reports every dead-lettered message to Sentry once, without its arguments.

    It keeps the stack trace of a message's final failure (``after_process_message`` sees
    ``message.failed`` when it sits before ``Retries`` in the stack) for at most ``max_pending``
    messages until the broker confirms the dead letter, and flushes Sentry when the worker stops
    (Dramatiq's forked worker processes end without running ``atexit`` hooks).
    """

    def __init__(self, *, flush_timeout: float = 2.0, max_pending: int = 1000) -> None:
        self.flush_timeout = flush_timeout
        self.max_pending = max_pending
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed or not sentry_sdk.get_client().is_active():
            return
        try:
            payload = _exception_payload(exception)
        except Exception:
            logger.warning("Could not describe the failure of message %s.", message.message_id, exc_info=True)
            return
        if payload is None:
            return
        with self._lock:
            self._pending[message.message_id] = payload
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)

    def after_dead_letter(
        self, broker: Broker, queue_name: str, record: dict[str, Any], message: Message[Any] | None
    ) -> None:
        exception = None
        if message is not None:
            with self._lock:
                exception = self._pending.pop(message.message_id, None)
        capture_dead_letter(queue_name, record, message, exception)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        sentry_sdk.flush(timeout=self.flush_timeout)


def capture_dead_letter(
    queue_name: str,
    record: dict[str, Any],
    message: Message[Any] | None,
    exception: dict[str, Any] | None = None,
) -> str | None:
    """Send the one event of a dead letter; return its id (None when Sentry is off or drops it)."""
    event = dead_letter_event(queue_name, record, message, exception)
    arguments = argument_values(message.args, message.kwargs) if message is not None else []
    # A scope of its own: the consumer thread's breadcrumbs are about other messages.
    with sentry_sdk.isolation_scope() as scope:
        scope.clear_breadcrumbs()
        sentry_sdk.get_current_scope().clear_breadcrumbs()
        return sentry_sdk.capture_event(cast("Event", event), hint={ARGUMENTS_HINT: arguments})


# -- circuit breakers ---------------------------------------------------------------------------

_reported_openings: dict[str, str] = {}
_openings_lock = threading.Lock()


def _state_name(state: object) -> str | None:
    if state is None:
        return None
    return str(getattr(state, "name", state)).lower().replace("_", "-")


def report_breaker_transition(
    provider: str,
    old: object,
    new: object,
    *,
    opened_at: datetime | None = None,
    claim: Callable[[str], bool] | None = None,
    level: Literal["warning", "error"] = "warning",
) -> str | None:
    """Report a breaker's opening to Sentry once; ignore every other transition.

    ``old``/``new`` are state names (``closed``, ``open``, ``half-open``) or pybreaker state objects.
    An opening is closed → open: a failed trial (half-open → open) continues the same outage. pybreaker
    notifies every process that *notices* a shared (Redis) state change, so give ``opened_at`` (the
    storage's ``opened_at``) to report each opening once per process, and ``claim`` — a callable that
    returns True for the first caller of a key across processes, e.g. Redis ``SET key 1 NX EX 3600`` —
    to report it once in all. Returns the event id, or None when nothing was sent.
    """
    old_name, new_name = _state_name(old), _state_name(new)
    if new_name != "open" or old_name not in (None, "closed"):
        return None
    key = f"circuit-breaker:{provider}:{opened_at.isoformat() if opened_at else 'unknown'}"
    with _openings_lock:
        if opened_at is not None and _reported_openings.get(provider) == key:
            return None
        _reported_openings[provider] = key
    if claim is not None and not claim(key):
        return None
    event = {
        "level": level,
        "logger": "edujobs.circuit_breakers",
        "message": f"Circuit breaker for {provider} opened",
        "fingerprint": ["circuit-breaker", provider],
        "tags": {"provider": provider, "breaker_state": "open"},
        "extra": {"previous_state": old_name, "opened_at": opened_at.isoformat() if opened_at else None},
    }
    return sentry_sdk.capture_event(cast("Event", event))


# -- crons --------------------------------------------------------------------------------------


def capture_check_in(
    monitor_slug: str,
    status: Literal["in_progress", "ok", "error"],
    *,
    check_in_id: str | None = None,
    duration: float | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    checkin_margin_minutes: int | None = None,
    max_runtime_minutes: int | None = None,
) -> str | None:
    """Send a Sentry Crons check-in; return its id (pass it back with the final status).

    With ``schedule`` (a crontab line), the monitor is created or updated from the check-in, so a
    scheduled job that does not check in on time raises a "missed" alert in Sentry.
    """
    config: dict[str, Any] | None = None
    if schedule is not None:
        config = {"schedule": {"type": "crontab", "value": schedule}}
        if timezone is not None:
            config["timezone"] = timezone
        if checkin_margin_minutes is not None:
            config["checkin_margin"] = checkin_margin_minutes
        if max_runtime_minutes is not None:
            config["max_runtime"] = max_runtime_minutes
    return capture_checkin(
        monitor_slug=monitor_slug,
        check_in_id=check_in_id,
        status=status,
        duration=duration,
        monitor_config=cast("MonitorConfig | None", config),
    )
