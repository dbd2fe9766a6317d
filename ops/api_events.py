"""The HTTP API of domain events (``contracts.events``), added to the app by ``ops.api``.

- ``POST /v1/events``: validate and publish one event to ``edujobs.events`` (confirmed by RabbitMQ)
  → 202 with its id and the handlers bound to it. Publishing the same ``event_id`` again runs no
  handler's side effect twice.

Scope ``events:publish`` publishes any event; ``events:publish:<event>`` (``events:publish:user.created``)
only that one. Every request is audited (``events.publish``), as enqueues are.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from brokers.client import Client, PublishError
from contracts.errors import EdujobsError, UnknownActorError
from contracts.events import get_event, handlers_of
from ops.auth import Caller, authenticate, check_scope
from store import audit

logger = logging.getLogger(__name__)


class EventIn(BaseModel):
    event: str = Field(examples=["user.created"], max_length=200)
    payload: dict[str, Any] = Field(
        description="The event's contract (docs/schemas/event.<name>.schema.json)"
    )
    event_id: str | None = Field(
        default=None, min_length=1, max_length=200, description="Its id (a new UUID if left out)"
    )
    occurred_at: datetime | None = Field(default=None, description="When it happened (time-zone aware)")


class EventAccepted(BaseModel):
    event_id: str
    event: str
    handlers: list[str]


def add_event_routes(app: FastAPI, *, engine: Engine, client: Client) -> None:
    @app.post("/v1/events", status_code=202, response_model=EventAccepted, tags=["events"])
    def publish_event(body: EventIn, caller: Annotated[Caller, Depends(authenticate)]) -> EventAccepted:
        """Validate and publish one event; 202 with its id once RabbitMQ confirmed it."""
        try:
            spec = get_event(body.event)
        except UnknownActorError as e:
            raise HTTPException(422, str(e)) from None
        check_scope(caller, f"events:publish:{spec.name}")
        if body.occurred_at is not None and body.occurred_at.tzinfo is None:
            raise HTTPException(422, "occurred_at must carry a time zone, e.g. 2026-11-22T10:00:00+01:00")
        try:
            event_id = client.publish_event(
                spec.name, body.payload, event_id=body.event_id, occurred_at=body.occurred_at
            )
        except PublishError as e:
            _audit(engine, caller, body, None, failed=str(e))
            raise HTTPException(503, f"RabbitMQ did not confirm: {e}") from None
        except (EdujobsError, ValueError) as e:
            raise HTTPException(422, str(e)) from None
        _audit(engine, caller, body, event_id)
        return EventAccepted(event_id=event_id, event=spec.name, handlers=list(handlers_of(spec.name)))


def _audit(
    engine: Engine, caller: Caller, body: EventIn, event_id: str | None, *, failed: str | None = None
) -> None:
    details: dict[str, Any] = {"event_id": event_id or body.event_id}
    if failed is not None:
        details["failed"] = failed[:500]
    try:
        audit.record(
            engine, actor=f"token:{caller.name}", action="events.publish", target=body.event, details=details
        )
    except Exception:
        logger.exception("Could not audit the publication of event %s by %s.", body.event, caller.name)
