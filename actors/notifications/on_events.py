"""What the notifications domain does when a domain event happens (``contracts.events``).

Plain functions, no dramatiq: ``handlers`` adapts events to them. Each takes the key its side
effect is done once under (``<handler>:<event id>``): an event published twice, or a handler run
again after a failure, notifies once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from actors.notifications import service
from store.models import Iep, User

#: ``actors.base.notify``'s shape: (user id, template, context, idempotency key).
Notify = Callable[[int, str, dict[str, Any], str], None]


def tell_iep_coordinator(
    engine: Engine, notify: Notify, *, iep_id: int, user_id: int, coordinator_id: int | None, key: str
) -> dict[str, Any]:
    """Tell the coordinator of a new IEP (the event's, else the one the IEP names) about it, through
    ``notifications.notify_user`` (template ``iep_created``: the coordinator's channels, quiet hours
    and fallbacks apply). An IEP without a coordinator notifies nobody."""
    with Session(engine) as session:
        iep = session.get(Iep, iep_id)
        coordinator = coordinator_id or (iep.coordinator_id if iep is not None else None)
        if coordinator is None:
            return {"notified": False, "why": "the IEP has no coordinator"}
        student = session.get(User, user_id)
        context = {
            "student_name": student.name if student is not None else f"student {user_id}",
            "iep_id": iep_id,
        }
        if iep is not None:
            context["starts_on"] = iep.starts_on.isoformat()
            context["review_due_on"] = iep.review_due_on.isoformat()
    notify(coordinator, "iep_created", context, key)
    return {"notified": True, "coordinator_id": coordinator}


def send_welcome_email(
    notifier: service.Notifier, *, user_id: int, key: str, message_id: str, actor_name: str
) -> dict[str, Any]:
    """The welcome email to a new user, once per key (the notification ledger)."""
    result = service.send_email(
        notifier,
        user_id=user_id,
        template="welcome",
        context={},
        idempotency_key=key,
        message_id=message_id,
        actor_name=actor_name,
    )
    return result.summary()
