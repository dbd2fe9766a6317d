"""The monthly reports: compliance audit and system health summary (data gathering; no Dramatiq)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from store.models import AccessLog, AuditLog, Delivery, Iep, JobRecord
from store.models_schedules import ScheduleFire


def month_bounds(month: str | None, now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """``YYYY-MM`` (default: the month before ``now``) and its first and next-first instants (UTC)."""
    if month is None:
        today = (now or datetime.now(UTC)).date()
        year, number = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    else:
        year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return f"{year:04d}-{number:02d}", start, end


def compliance_audit(engine: Engine, month: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """IEPs started and whose review fell due in the month, every access to student records (FERPA),
    and every operator action, for ``month``."""
    label, start, end = month_bounds(month, now)
    first_day, next_first = start.date(), end.date()
    with engine.connect() as connection:
        started = connection.execute(
            select(Iep.id, Iep.user_id, Iep.coordinator_id, Iep.starts_on, Iep.review_due_on)
            .where(Iep.starts_on >= first_day, Iep.starts_on < next_first)
            .order_by(Iep.starts_on, Iep.id)
        ).all()
        due = connection.execute(
            select(Iep.id, Iep.user_id, Iep.coordinator_id, Iep.review_due_on, Iep.last_reminded_days)
            .where(Iep.review_due_on >= first_day, Iep.review_due_on < next_first)
            .order_by(Iep.review_due_on, Iep.id)
        ).all()
        accesses = connection.execute(
            select(
                AccessLog.at, AccessLog.actor_user_id, AccessLog.user_id, AccessLog.resource, AccessLog.action
            )
            .where(AccessLog.at >= start, AccessLog.at < end)
            .order_by(AccessLog.at, AccessLog.id)
        ).all()
        actions = connection.execute(
            select(AuditLog.at, AuditLog.actor, AuditLog.action, AuditLog.target, AuditLog.details)
            .where(AuditLog.at >= start, AuditLog.at < end)
            .order_by(AuditLog.at, AuditLog.id)
        ).all()
    by_accessor: dict[str, int] = defaultdict(int)
    for access in accesses:
        by_accessor[str(access.actor_user_id) if access.actor_user_id is not None else "system"] += 1
    by_action: dict[str, int] = defaultdict(int)
    for action in actions:
        by_action[action.action] += 1
    return {
        "month": label,
        "ieps_started": [
            {
                "iep_id": r.id,
                "student_id": r.user_id,
                "coordinator_id": r.coordinator_id,
                "starts_on": r.starts_on.isoformat(),
                "review_due_on": r.review_due_on.isoformat(),
            }
            for r in started
        ],
        "iep_reviews_due": [
            {
                "iep_id": r.id,
                "student_id": r.user_id,
                "coordinator_id": r.coordinator_id,
                "review_due_on": r.review_due_on.isoformat(),
                "last_reminder_days": r.last_reminded_days,
            }
            for r in due
        ],
        "record_access": {"total": len(accesses), "by_accessor": dict(sorted(by_accessor.items()))},
        "operator_actions": {
            "total": len(actions),
            "by_action": dict(sorted(by_action.items())),
            "entries": [
                {
                    "at": a.at.isoformat(),
                    "actor": a.actor,
                    "action": a.action,
                    "target": a.target,
                    "details": a.details,
                }
                for a in actions
            ],
        },
        "_access_rows": accesses,
    }


def access_csv(rows: list[Any]) -> bytes:
    """The month's student-record accesses as CSV (one row per access)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "accessed_by_user_id", "student_user_id", "resource", "action"])
    for row in rows:
        writer.writerow([row.at.isoformat(), row.actor_user_id, row.user_id, row.resource, row.action])
    return out.getvalue().encode()


def system_health(engine: Engine, month: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Jobs by state and the actors that failed most, deliveries by channel and status, and
    schedule fires by schedule and outcome, for ``month``."""
    label, start, end = month_bounds(month, now)
    with engine.connect() as connection:
        jobs = connection.execute(
            select(JobRecord.actor_name, JobRecord.state, func.count())
            .where(JobRecord.updated_at >= start, JobRecord.updated_at < end)
            .group_by(JobRecord.actor_name, JobRecord.state)
        ).all()
        deliveries = connection.execute(
            select(Delivery.channel, Delivery.status, func.count())
            .where(Delivery.claimed_at >= start, Delivery.claimed_at < end)
            .group_by(Delivery.channel, Delivery.status)
        ).all()
        fires = connection.execute(
            select(ScheduleFire.schedule, ScheduleFire.status, func.count())
            .where(ScheduleFire.fire_time >= start, ScheduleFire.fire_time < end)
            .group_by(ScheduleFire.schedule, ScheduleFire.status)
        ).all()
    by_state: dict[str, int] = defaultdict(int)
    by_actor: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for actor, state, count in jobs:
        by_state[state] += count
        by_actor[actor][state] += count
    ranked = sorted(by_actor.items(), key=lambda item: (-item[1]["dead"], -item[1]["failed"], item[0]))
    failing = [
        {
            "actor": actor,
            "dead": states["dead"],
            "failed_attempts": states["failed"],
            "succeeded": states["succeeded"],
        }
        for actor, states in ranked
    ]
    channels: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, status, count in deliveries:
        channels[channel][status] = count
    schedules: dict[str, dict[str, int]] = defaultdict(dict)
    for schedule, status, count in fires:
        schedules[schedule][status] = count
    total = sum(by_state.values())
    return {
        "month": label,
        "jobs": {
            "total": total,
            "by_state": dict(sorted(by_state.items())),
            "success_rate": round(by_state.get("succeeded", 0) / total, 4) if total else None,
            "actors": failing,
        },
        "deliveries": {channel: dict(sorted(s.items())) for channel, s in sorted(channels.items())},
        "schedule_fires": {name: dict(sorted(s.items())) for name, s in sorted(schedules.items())},
        "generated_at": datetime.now(UTC).isoformat(),
    }
