"""Digests: many events of a user within a window, merged into one notification.

Other domains record events with ``record_digest_event`` (``weekly``: anything worth a line in the
weekly summary; ``daily_grade``: a posted grade). ``send_digest`` takes a user's undigested events
of one kind within a window, delivers ONE notification through ``routing.notify_user`` under the
key ``digest:<kind>:<user>:<window end>``, and then marks those events digested. A rerun (crash
after delivering, before marking) finds the delivery in the ledger, sends nothing, and marks them.
``due_digests`` lists the users with a weekly digest to send, for the scheduled fan-out (the
crontab's ``weekly-digest``, Sundays).

Weekly events come from the notifications themselves: when ``notify_user`` delivers a grade
(``grade_posted``), a day's grades (``daily_grade_digest``) or a finished report (``report_ready``),
``record_weekly_events`` keeps one line per item for the user's Sunday summary. Only a delivery
that went out now records them (a redelivered notification, answered from the ledger, does not), so
a redelivery adds no line twice; a worker dying between the send and the record loses those lines
(the week's summary is a convenience, the notification itself was delivered).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from actors.notifications import routing
from actors.notifications.service import Notifier
from store.models_notifications import DigestEvent

#: kind → the template its digest uses.
DIGEST_TEMPLATES = {"weekly": "weekly_digest", "daily_grade": "daily_grade_digest"}
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class DigestResult:
    status: str  # "sent", "duplicate", "deferred" or "empty"
    events: int
    channel: str | None = None
    until: datetime | None = None  # when deferred: the end of the user's quiet hours

    def summary(self) -> dict[str, Any]:
        until = self.until.isoformat() if self.until else None
        return {"status": self.status, "events": self.events, "channel": self.channel, "until": until}


def record_digest_event(engine: Engine, user_id: int, kind: str, payload: dict[str, Any]) -> int:
    """Keep an event for the user's next ``kind`` digest; return its id."""
    if kind not in DIGEST_TEMPLATES:
        raise ValueError(f"unknown digest kind {kind!r}; known: {', '.join(DIGEST_TEMPLATES)}")
    with Session(engine) as session, session.begin():
        event = DigestEvent(user_id=user_id, kind=kind, payload=payload)
        session.add(event)
        session.flush()
        return event.id


def weekly_summaries(template: str, context: dict[str, Any]) -> list[str]:
    """The weekly digest's lines for a delivered notification; none for templates it does not sum up."""
    if template == "grade_posted":
        grades = [context]
    elif template == "daily_grade_digest":
        grades = [g for g in context.get("grades") or [] if isinstance(g, dict)]
    elif template == "report_ready":
        fmt = str(context.get("report_format", "")).upper()
        return [f'Report "{context.get("report_name", "report")}" ({fmt}) is ready']
    else:
        return []
    return [
        f"{g.get('course', '')}, {g.get('assignment', '')}: {g.get('score', '')}/{g.get('max_score', '')}"
        for g in grades
    ]


def record_weekly_events(engine: Engine, user_id: int, template: str, context: dict[str, Any]) -> int:
    """Keep the weekly digest's lines for a notification just delivered; return how many."""
    kind = "report" if template == "report_ready" else "grade"
    lines = weekly_summaries(template, context)
    if lines:
        with Session(engine) as session, session.begin():
            session.add_all(
                DigestEvent(user_id=user_id, kind="weekly", payload={"kind": kind, "summary": line})
                for line in lines
            )
    return len(lines)


def pending_events(
    engine: Engine, user_id: int, kind: str, start: datetime, end: datetime
) -> list[DigestEvent]:
    with Session(engine, expire_on_commit=False) as session:
        query = (
            select(DigestEvent)
            .where(
                DigestEvent.user_id == user_id,
                DigestEvent.kind == kind,
                DigestEvent.digested_at.is_(None),
                DigestEvent.created_at >= start,
                DigestEvent.created_at < end,
            )
            .order_by(DigestEvent.created_at, DigestEvent.id)
        )
        return list(session.scalars(query))


def digest_context(
    kind: str, events: Sequence[DigestEvent], start: datetime, end: datetime
) -> dict[str, Any]:
    if kind == "daily_grade":
        return {"date": start.date().isoformat(), "grades": [e.payload for e in events]}
    items = [
        {"kind": str(e.payload.get("kind", "update")), "summary": str(e.payload.get("summary", ""))}
        for e in events
    ]
    return {"week_start": start.date().isoformat(), "week_end": (end - timedelta(days=1)).date().isoformat(),
            "items": items}  # fmt: skip


def send_digest(
    notifier: Notifier,
    *,
    user_id: int,
    kind: str,
    window_start: datetime,
    window_end: datetime,
    message_id: str,
) -> DigestResult:
    """Deliver one digest of the user's ``kind`` events in [window_start, window_end)."""
    events = pending_events(notifier.engine, user_id, kind, window_start, window_end)
    if not events:
        return DigestResult("empty", 0)
    key = f"digest:{kind}:{user_id}:{window_end.isoformat()}"
    outcome = routing.notify_user(
        notifier,
        user_id=user_id,
        template=DIGEST_TEMPLATES[kind],
        context=digest_context(kind, events, window_start, window_end),
        idempotency_key=key,
        message_id=message_id,
    )
    if isinstance(outcome, routing.Deferred):
        return DigestResult("deferred", len(events), until=outcome.until)
    with Session(notifier.engine) as session, session.begin():
        session.execute(
            update(DigestEvent)
            .where(DigestEvent.id.in_([e.id for e in events]), DigestEvent.digested_at.is_(None))
            .values(digested_at=datetime.now(window_end.tzinfo), digest_key=key)
        )
    return DigestResult(outcome.result.status, len(events), outcome.channel)


def due_digests(engine: Engine, kind: str, window_start: datetime, window_end: datetime) -> list[int]:
    """The users with undigested ``kind`` events in the window."""
    with Session(engine) as session:
        query = (
            select(DigestEvent.user_id)
            .where(
                DigestEvent.kind == kind,
                DigestEvent.digested_at.is_(None),
                DigestEvent.created_at >= window_start,
                DigestEvent.created_at < window_end,
            )
            .distinct()
            .order_by(DigestEvent.user_id)
        )
        return list(session.scalars(query))
