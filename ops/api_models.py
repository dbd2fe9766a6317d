"""The HTTP API's request and response bodies (``ops.api``; ``ops.enqueue`` holds ``MessageIn``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.priorities import Priority
from ops.enqueue import MessageIn

#: The largest id the store's integer columns hold (PostgreSQL's ``integer``): an id or user id in a
#: request past it is refused (422) instead of failing in the database (500).
DB_INT_MAX = 2**31 - 1

MAX_BATCH = 1000


class BatchIn(BaseModel):
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_BATCH)


class Accepted(BaseModel):
    message_id: str
    actor: str


class BatchAccepted(BaseModel):
    messages: list[Accepted]


class RequeueIn(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=10_000)
    fingerprint: str | None = Field(default=None, max_length=64)
    all: bool = False
    dry_run: bool = False


class PurgeIn(BaseModel):
    fingerprint: str | None = Field(default=None, max_length=64, description="Only this cause's dead letters")
    older_than_seconds: float | None = Field(default=None, ge=0, le=10 * 365 * 86_400)
    dry_run: bool = False


class ScheduleIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", examples=["winter-announcement"])
    actor: str = Field(max_length=128, examples=["notifications.send_bulk_email"])
    payload: dict[str, Any] = Field(default_factory=dict, description="The actor's arguments")
    at: datetime | None = Field(default=None, description="Once, at this time (naive: wall time in timezone)")
    cron: str | None = Field(default=None, max_length=100, description="Recurring: a cron expression")
    timezone: str | None = Field(default=None, max_length=64, description="IANA zone; default the district's")
    priority: Priority | None = None
    misfire: Literal["catch_up", "skip"] = "catch_up"
    grace_seconds: int = Field(default=600, ge=1, le=7 * 86_400)
    replace: bool = False


class CancelIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
    unrecorded: bool = Field(
        default=False, description="Cancel an id with no job recorded (its producer records none)"
    )


class PauseIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
