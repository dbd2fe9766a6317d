"""The edujobs actor decorator: Dramatiq's, with queue and priority taken from ``contracts``.

``@actor("notifications.send_email", time_limit=..., max_backoff=...)`` declares a Dramatiq actor
whose queue and default priority come from the registered contract, so that producers (which only
import ``contracts``) and workers always agree. Permanent errors are never retried.

A job cancelled while it runs (``edujobs jobs cancel``) stops at its next progress point:
``report_progress`` raises ``ProcessingCancelledError`` (``contracts.errors``), and the decorator
turns that into a normal return, so the message is acknowledged (neither retried nor dead-lettered)
and the job keeps its ``cancelled`` state.

``@handler("notifications.on_user_created", events=["user.created"], ...)`` declares an event
handler: an actor on a queue of its own bound to those events (``contracts.events``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.middleware import CurrentMessage

from contracts.errors import PermanentError, ProcessingCancelledError
from contracts.events import Event, event_of, register_handler
from contracts.priorities import PRIORITIES, broker_priority
from contracts.registry import get_contract

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)


def actor(
    name: str, *, time_limit: int, max_backoff: int, max_retries: int = 5, **options: Any
) -> Callable[[F], dramatiq.Actor[Any, Any]]:
    """Declare an actor named ``name`` (``<domain>.<verb>_<noun>``) on its contract's queue."""
    contract = get_contract(name)

    def decorator(fn: F) -> dramatiq.Actor[Any, Any]:
        return dramatiq.actor(  # type: ignore[no-any-return,call-overload]
            _stopping_when_cancelled(fn),
            actor_name=name,
            queue_name=contract.queue,
            time_limit=time_limit,
            max_backoff=max_backoff,
            max_retries=max_retries,
            throws=(PermanentError,),
            broker_priority=broker_priority(contract.priority),
            **options,
        )

    return decorator


def handler(
    name: str,
    *,
    events: list[str],
    time_limit: int,
    max_backoff: int,
    max_retries: int = 5,
    priority: str = "normal",
    **options: Any,
) -> Callable[[Callable[[Event[Any]], Any]], dramatiq.Actor[Any, Any]]:
    """Declare an event handler named ``name`` (``<domain>.on_<event_noun>``): an actor with a queue
    of its own, named after it, bound to the routing keys ``events`` on ``edujobs.events``.

    It is called with the ``Event`` (id, name, when it occurred, validated payload) and has its
    own retries, priority and dead letters; an event published twice reaches it twice, so its side
    effects are keyed by ``f"{name}:{event.id}"`` (README, "Events")."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r} for {name}")
    if not events:
        raise ValueError(f"handler {name} handles no event")
    register_handler(name, tuple(events))

    def decorator(fn: Callable[[Event[Any]], Any]) -> dramatiq.Actor[Any, Any]:
        @functools.wraps(fn)
        def run(**payload: Any) -> Any:
            message = CurrentMessage.get_current_message()
            if message is None:
                raise RuntimeError(f"{name} runs only as a worker's handler of an event")
            return fn(event_of(message.message_id, message.options, payload))

        return dramatiq.actor(  # type: ignore[no-any-return,call-overload]
            _stopping_when_cancelled(run),
            actor_name=name,
            queue_name=name,
            time_limit=time_limit,
            max_backoff=max_backoff,
            max_retries=max_retries,
            throws=(PermanentError,),
            broker_priority=broker_priority(priority),
            **options,
        )

    return decorator


def _stopping_when_cancelled(fn: F) -> F:
    """``fn``, returning ``{"cancelled": True}`` when the job was cancelled while it ran."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProcessingCancelledError:
            logger.info("Job %s was cancelled while it ran; it stopped.", current_message_id())
            return {"cancelled": True}

    return run  # type: ignore[return-value]


def current_message_id() -> str:
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("no current message: call this from inside an actor")
    return str(message.message_id)


def current_idempotency_key() -> str:
    """The message's idempotency key if the sender gave one, else its id (stable across attempts)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("no current message: call this from inside an actor")
    key = message.options.get("idempotency_key")
    return str(key) if key else f"msg:{message.message_id}"


def enqueue(
    actor_name: str,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    priority: str | None = None,
    delay: float | None = None,
) -> str:
    """Send a message to another actor from inside a worker; return its message id.

    It goes through the worker's own broker, so the ``Signatures`` middleware signs it and
    publisher confirms cover it. The payload is validated against the actor's contract first (a
    ``ContractError`` is a bug of the sender: permanent). With an ``idempotency_key`` the message id
    is derived from it, as ``brokers.client`` does, and the receiving actor performs its side effect
    once per key, so a rerun of the sender sends nothing twice.
    """
    from brokers.client import message_id_for

    contract = get_contract(actor_name)
    kwargs = contract.validate(payload)
    name = priority or contract.priority
    options: dict[str, Any] = {"broker_priority": broker_priority(name), "priority_name": name}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=contract.queue,
        actor_name=actor_name,
        args=(),
        kwargs=kwargs,
        options=options,
        message_id=message_id_for(actor_name, idempotency_key),
    )
    delay_ms = None if delay is None else max(0, int(delay * 1000))
    dramatiq.get_broker().enqueue(message, delay=delay_ms)
    _record_enqueued(message.message_id, actor_name, contract.queue, kwargs)
    return message.message_id


def _record_enqueued(message_id: str, actor_name: str, queue: str, kwargs: dict[str, Any]) -> None:
    """An ``enqueued`` job record, so ``jobs show ID`` finds a job sent from a worker at once. The
    message is sent already: failing to record it must not fail (and rerun) the sender."""
    from brokers.settings import get_settings

    if not get_settings().record_job_state:
        return
    from store.db import get_engine
    from store.jobs import JobStore, user_id_of

    try:
        JobStore(get_engine()).record_enqueued(message_id, actor_name, queue, user_id=user_id_of(kwargs))
    except Exception:
        logger.warning("Could not record the enqueued job %s (%s).", message_id, actor_name, exc_info=True)


def notify(user_id: int, template: str, context: dict[str, Any], key: str) -> None:
    """Enqueue ``notifications.notify_user`` once per ``key`` (its idempotency key and message id):
    a job that runs twice notifies once."""
    enqueue(
        "notifications.notify_user",
        {"user_id": user_id, "template": template, "context": context, "idempotency_key": key},
        idempotency_key=key,
    )


_last_progress: dict[str, tuple[float, int]] = {}


def report_progress(percent: float) -> None:
    """Record the current job's progress (0-100) in the job store, at most twice a second, and stop
    the job if an operator cancelled it.

    Long actors (video transcoding, reports, bulk sends) call this as they go; ``edujobs jobs show
    ID`` and the HTTP API read it back. Raises ``ProcessingCancelledError`` when the job is
    cancelled: the actor stops there, and ``actor`` acknowledges the message.
    """
    import time

    from store.db import get_engine
    from store.jobs import JobStore

    message_id = current_message_id()
    value = max(0, min(100, int(percent)))
    now = time.monotonic()
    last = _last_progress.get(message_id)
    if last is not None and value != 100 and now - last[0] < 0.5:
        return
    _last_progress[message_id] = (now, value)
    if len(_last_progress) > 10_000:
        _last_progress.clear()
    jobs = JobStore(get_engine())
    if last is None or value != last[1]:
        jobs.set_progress(message_id, value)
    # Checked even when the figure did not move: a long step that reports 40% again may be stopped.
    if jobs.is_cancelled(message_id):
        raise ProcessingCancelledError(f"job {message_id} was cancelled while it was running")
