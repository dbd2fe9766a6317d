"""Event handlers of the notifications domain: thin adapters from events to ``on_events``."""

from __future__ import annotations

from typing import Any

from actors.base import current_message_id, handler, notify
from actors.notifications import on_events, service
from contracts.events import Event, IepCreated, UserCreated


@handler(
    "notifications.on_iep_created",
    events=["iep.created"],
    time_limit=60_000,
    max_backoff=3_600_000,
    max_retries=8,
)
def on_iep_created(event: Event[IepCreated]) -> dict[str, Any]:
    iep = event.payload
    return on_events.tell_iep_coordinator(
        service.default_notifier().engine,
        notify,
        iep_id=iep.iep_id,
        user_id=iep.user_id,
        coordinator_id=iep.coordinator_id,
        key=f"notifications.on_iep_created:{event.id}",
    )


@handler(
    "notifications.on_user_created",
    events=["user.created"],
    time_limit=60_000,
    max_backoff=3_600_000,
    max_retries=8,
)
def on_user_created(event: Event[UserCreated]) -> dict[str, Any]:
    name = "notifications.on_user_created"
    return on_events.send_welcome_email(
        service.default_notifier(),
        user_id=event.payload.user_id,
        key=f"{name}:{event.id}",
        message_id=current_message_id(),
        actor_name=name,
    )
