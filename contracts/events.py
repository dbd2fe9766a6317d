"""Domain events: one pydantic contract per event, the handler bindings, and an event's wire form.

An event says that something happened (``grade.updated``, ``user.created``); whoever cares reacts
to it. A producer publishes it once (``brokers.client.publish_event``) to the durable topic exchange
``EVENTS_EXCHANGE`` with the event's name as routing key; every handler (``actors.base.handler``) has
a queue of its own, named after it, bound to the names of the events it handles, so one event runs
each handler once, with that handler's own retries, priority and dead letters.

What a handler's queue receives is one signed message, the same in every queue (wire format v1,
``docs/wire-format.md``, "Events")::

    {"queue_name": "edujobs.events", "actor_name": <event name>, "args": [], "kwargs": <payload>,
     "message_id": <event id>, "message_timestamp": <ms>,
     "options": {"event": <event name>, "event_id": <event id>, "occurred_at": <ms>, "signature": ...}}

The worker consuming a handler's queue verifies it as received, then makes it that handler's
message (``handler_fields``): actor and queue become the handler's, and the message id becomes one
of its own (``handler_message_id``), so that job states, retries and dead letters of one handler
never meet another's. ``contracts.signing`` signs an event's envelope as its publisher wrote it
(``event_envelope``), so the signature holds for the handler's copy and every retry of it.

``HANDLERS`` names every handler of the code base and the events it is bound to: producers and
operators' tools, which import no actor, read the handler queues here; a worker binds the handlers it
declares (``bound_events``: the decorator checks they agree with this table).

This module imports neither dramatiq nor any project module but ``contracts``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from contracts.errors import ContractError, UnknownActorError
from contracts.registry import Contract, describe_validation_error

#: The durable topic exchange every event is published to (its routing key is the event's name).
EVENTS_EXCHANGE = "edujobs.events"
#: Where the exchange's alternate exchange puts events that no handler queue is bound to.
UNROUTED_EXCHANGE = "edujobs.events.unrouted"
UNROUTED_QUEUE = "events.unrouted"

#: The message options an event carries (its sender's, covered by its signature).
EVENT_OPTION = "event"
EVENT_ID_OPTION = "event_id"
OCCURRED_AT_OPTION = "occurred_at"

_ID_NAMESPACE = uuid.UUID("4c1b2f0e-5d7a-4e8b-9f36-0e2a7d9b6c51")


class EventContract(Contract):
    """Base class of every event contract: unknown fields are refused."""


E = TypeVar("E", bound=EventContract)
C = TypeVar("C", bound=type[EventContract])


@dataclass(frozen=True)
class EventSpec:
    """What a producer needs to know of an event."""

    name: str
    model: type[EventContract]

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Return the payload as JSON-safe fields, or raise ``ContractError`` naming the field."""
        return self.parse(payload).model_dump(mode="json")

    def parse(self, payload: Mapping[str, Any]) -> EventContract:
        try:
            return self.model.model_validate(dict(payload))
        except ValidationError as e:
            raise ContractError(describe_validation_error(f"event {self.name}", e)) from None


@dataclass(frozen=True)
class Event(Generic[E]):
    """One event as a handler receives it: ``payload`` is its validated contract."""

    id: str
    name: str
    occurred_at: datetime
    payload: E


_EVENTS: dict[str, EventSpec] = {}


def register_event(name: str) -> Callable[[C], C]:
    """Register an event contract under its name (a class decorator)."""

    def decorator(model: C) -> C:
        if name in _EVENTS:
            raise ValueError(f"an event contract is already registered for {name}")
        _EVENTS[name] = EventSpec(name, model)
        return model

    return decorator


def get_event(name: str) -> EventSpec:
    """The contract of an event, or ``UnknownActorError`` listing the known events."""
    try:
        return _EVENTS[name]
    except KeyError:
        known = ", ".join(sorted(_EVENTS)) or "none"
        raise UnknownActorError(f"unknown event {name!r}; known events: {known}") from None


def all_events() -> dict[str, EventSpec]:
    """Every registered event, by name."""
    return dict(sorted(_EVENTS.items()))


# -- the events ---------------------------------------------------------------------------------

AttendanceStatus = Literal["present", "absent", "late", "excused"]


@register_event("grade.updated")
class GradeUpdated(EventContract):
    """A grade was posted or changed: course grades and the student's notifications follow."""

    grade_id: int
    user_id: int
    course_id: int
    assignment_id: int


@register_event("attendance.marked")
class AttendanceMarked(EventContract):
    """A student's attendance for a day was recorded or corrected (``previous_status`` then says
    what it was)."""

    user_id: int
    course_id: int
    day: date
    status: AttendanceStatus
    previous_status: AttendanceStatus | None = None


@register_event("iep.created")
class IepCreated(EventContract):
    """An IEP (individualised education programme) was opened for a student; its coordinator, when
    one is named, is told."""

    iep_id: int
    user_id: int
    coordinator_id: int | None = None


@register_event("user.created")
class UserCreated(EventContract):
    """A user account was created: the welcome email follows."""

    user_id: int


# -- handlers -----------------------------------------------------------------------------------

#: Every handler of the code base (its name is its queue's) and the events it is bound to: what
#: producers and operators' tools, which import no actor, know of the handlers.
HANDLERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "academics.on_grade_updated": ("grade.updated",),
        "academics.on_attendance_marked": ("attendance.marked",),
        "notifications.on_iep_created": ("iep.created",),
        "notifications.on_user_created": ("user.created",),
    }
)

#: The handlers declared in this process (by ``actors.base.handler``), tests' and benchmarks' included.
_DECLARED: dict[str, tuple[str, ...]] = {}


def register_handler(name: str, events: tuple[str, ...]) -> None:
    """Record a handler declared in this process (the ``handler`` decorator calls it); a handler listed
    in ``HANDLERS`` must be bound to exactly the events listed there."""
    for event in events:
        get_event(event)
    known = HANDLERS.get(name)
    if known is not None and set(known) != set(events):
        raise ValueError(
            f"handler {name} handles {', '.join(events)} but contracts.events.HANDLERS binds it to "
            f"{', '.join(known)}: make them agree"
        )
    _DECLARED[name] = tuple(events)


def bound_events(handler: str) -> tuple[str, ...] | None:
    """The events ``handler``'s queue is bound to (declared in this process, else listed), or None
    when it is not a handler."""
    return _DECLARED.get(handler) or HANDLERS.get(handler)


def handler_queues() -> tuple[str, ...]:
    """The queue of every listed handler (a handler's queue is named after it)."""
    return tuple(sorted(HANDLERS))


def handlers_of(event: str) -> tuple[str, ...]:
    """The listed handlers bound to ``event``."""
    return tuple(sorted(name for name, events in HANDLERS.items() if event in events))


# -- the wire form ------------------------------------------------------------------------------


def handler_message_id(event_id: str, handler: str) -> str:
    """The message id of ``handler``'s run of an event: its own, the same on every delivery."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{handler}\x00{event_id}"))


def event_envelope(options: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(actor_name, queue_name, message_id)`` as an event's publisher wrote them, from its options,
    or None when the message is not an event (or its event options are not strings)."""
    name, event_id = options.get(EVENT_OPTION), options.get(EVENT_ID_OPTION)
    if type(name) is not str or type(event_id) is not str:
        return None
    return name, EVENTS_EXCHANGE, event_id


def handler_fields(fields: dict[str, Any], handler: str) -> None:
    """Make a received event ``handler``'s message, in place (its signature still holds)."""
    envelope = event_envelope(fields["options"])
    assert envelope is not None
    fields["actor_name"] = handler
    fields["message_id"] = handler_message_id(envelope[2], handler)


def event_of(message_id: str, options: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Event[Any]:
    """The ``Event`` a handler's message carries (its payload validated against the contract)."""
    envelope = event_envelope(options)
    if envelope is None:
        raise ContractError(f"message {message_id} is not an event")
    name, _queue, event_id = envelope
    occurred_ms = options.get(OCCURRED_AT_OPTION)
    occurred_at = datetime.fromtimestamp((occurred_ms or 0) / 1000, tz=UTC)
    return Event(id=event_id, name=name, occurred_at=occurred_at, payload=get_event(name).parse(kwargs))
