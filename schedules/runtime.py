"""Run-time schedules (created by ``edujobs schedules add``, the API or ``add_schedule``) and the
listing of every schedule with its next and last fires.

A run-time schedule is stored as a job (``schedules.jobs``) that the running scheduler picks up at its
next tick; it survives restarts. The listing reads the crontab, the job store and ``schedule_fires``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import Session

from schedules.cron import CronError, CronTrigger, resolve, zone
from schedules.crontab import Schedule
from schedules.jobs import (
    ScheduleError,
    check_schedule,
    crontab_job_id,
    dynamic_job_id,
    job_store,
    make_job,
    misfire_policy,
)
from store.models_schedules import ScheduleFire


def add_schedule(
    engine: Engine,
    name: str,
    actor: str,
    payload: dict[str, Any],
    *,
    at: datetime | None = None,
    cron: str | None = None,
    timezone: str | None = None,
    priority: str | None = None,
    misfire: str = "catch_up",
    grace_seconds: int = 600,
    replace: bool = False,
    now: datetime | None = None,
) -> Job:
    """Store a schedule created at run time: one-off ``at`` (naive = wall time in ``timezone``) or
    recurring ``cron``; ``timezone`` defaults to the district's (``EDUJOBS_SCHEDULE_TIMEZONE``), as in
    the CLI and the API. The running scheduler picks it up at its next tick; it survives restarts."""
    now = now or datetime.now(UTC)
    if timezone is None:
        from brokers.settings import get_settings

        timezone = get_settings().schedule_timezone
    check_schedule(name, actor, payload, priority, misfire, timezone)
    if (at is None) == (cron is None):
        raise ScheduleError(
            f"schedule {name!r}: give either a date and time (at) or a cron expression, not both"
        )
    trigger: CronTrigger | DateTrigger
    if cron is not None:
        try:
            trigger = CronTrigger(cron, timezone)
        except CronError as e:
            raise ScheduleError(f"schedule {name!r}: {e}") from None
        next_run = trigger.get_next_fire_time(None, now)
    else:
        assert at is not None
        when = resolve(at, zone(timezone)) if at.tzinfo is None else at
        if when <= now:
            raise ScheduleError(f"schedule {name!r}: {when.isoformat()} is in the past")
        trigger = DateTrigger(run_date=when, timezone=zone(timezone))
        next_run = when
    store = job_store(engine)
    job_id = dynamic_job_id(name)
    job = make_job(
        job_id=job_id,
        name=name,
        actor=actor,
        payload=payload,
        priority=priority,
        trigger=trigger,
        misfire=misfire,
        grace_seconds=grace_seconds,
        next_run_time=next_run,
        timezone=timezone,
    )
    if store.lookup_job(job_id) is not None:
        if not replace:
            raise ScheduleError(f"a schedule named {name!r} exists already: remove it first, or replace it")
        store.update_job(job)
    else:
        store.add_job(job)
    return job


def remove_schedule(engine: Engine, name: str) -> None:
    """Remove a run-time schedule; ``ScheduleError`` if there is none by that name."""
    try:
        job_store(engine).remove_job(dynamic_job_id(name))
    except JobLookupError:
        raise ScheduleError(
            f"no run-time schedule named {name!r} (crontab schedules change in code)"
        ) from None


# -- listing ----------------------------------------------------------------------------------------


def next_fire_times(trigger: CronTrigger | DateTrigger, first: datetime | None, count: int) -> list[datetime]:
    times: list[datetime] = []
    current = first
    while current is not None and len(times) < count:
        times.append(current)
        current = trigger.get_next_fire_time(current, current)
    return times


def last_fires(engine: Engine, names: Iterable[str]) -> dict[str, ScheduleFire]:
    """The latest fire of each schedule (any status)."""
    latest = (
        select(ScheduleFire.schedule, func.max(ScheduleFire.fire_time).label("fire_time"))
        .where(ScheduleFire.schedule.in_(list(names)))
        .group_by(ScheduleFire.schedule)
        .subquery()
    )
    statement = select(ScheduleFire).join(
        latest, and_(ScheduleFire.schedule == latest.c.schedule, ScheduleFire.fire_time == latest.c.fire_time)
    )
    with Session(engine, expire_on_commit=False) as session:
        return {fire.schedule: fire for fire in session.scalars(statement)}


def last_enqueued(engine: Engine, names: Iterable[str]) -> dict[str, datetime]:
    """When the latest enqueued fire of each schedule was enqueued, from the record."""
    statement = (
        select(ScheduleFire.schedule, func.max(ScheduleFire.enqueued_at))
        .where(ScheduleFire.schedule.in_(list(names)), ScheduleFire.status == "enqueued")
        .group_by(ScheduleFire.schedule)
    )
    with engine.connect() as connection:
        return {name: at for name, at in connection.execute(statement) if at is not None}


def list_schedules(
    engine: Engine,
    crontab: Sequence[Schedule],
    default_timezone: str,
    *,
    now: datetime | None = None,
    count: int = 3,
) -> list[dict[str, Any]]:
    """Every schedule, crontab (and periodic actors: ``kind`` is the entry's source, ``crontab`` or
    ``actor``) then run-time: its next ``count`` fire times in its own time zone, and its last fire."""
    now = now or datetime.now(UTC)
    store = job_store(engine)
    stored = {job.id: job for job in store.get_all_jobs()}
    rows: list[dict[str, Any]] = []
    for entry in crontab:
        timezone = entry.timezone or default_timezone
        trigger = CronTrigger(entry.cron, timezone)
        job = stored.get(crontab_job_id(entry.name))
        first = job.next_run_time if job is not None else trigger.get_next_fire_time(None, now)
        rows.append(
            _row(
                entry.name,
                entry.source,
                entry.actor,
                entry.cron,
                timezone,
                entry.misfire,
                trigger,
                first,
                count,
            )
            | {"description": entry.description, "payload": entry.payload, "priority": entry.priority}
        )
    for job_id, job in sorted(stored.items()):
        if not job_id.startswith("dynamic:"):
            continue
        trigger = job.trigger
        timezone = str(job.kwargs.get("timezone") or default_timezone)
        what = trigger.expression if isinstance(trigger, CronTrigger) else "once"
        misfire = misfire_policy(job)
        rows.append(
            _row(
                job.name,
                "run-time",
                job.kwargs["actor"],
                what,
                timezone,
                misfire,
                trigger,
                job.next_run_time,
                count,
            )
            | {"description": "", "payload": job.kwargs["payload"], "priority": job.kwargs["priority"]}
        )
    last = last_fires(engine, [row["name"] for row in rows])
    for row in rows:
        fire = last.get(row["name"])
        row["last_fire"] = (
            None
            if fire is None
            else {
                # In the schedule's zone, like its next runs (the offset keeps the instant exact).
                "fire_time": fire.fire_time.astimezone(zone(row["timezone"])).isoformat(),
                "status": fire.status,
                "message_id": fire.message_id,
                "enqueued_at": fire.enqueued_at.isoformat() if fire.enqueued_at else None,
                "note": fire.note,
            }
        )
    return rows


def _row(
    name: str,
    kind: str,
    actor: str,
    when: str,
    timezone: str,
    misfire: str,
    trigger: CronTrigger | DateTrigger,
    first: datetime | None,
    count: int,
) -> dict[str, Any]:
    tz = zone(timezone)
    return {
        "name": name,
        "kind": kind,
        "actor": actor,
        "cron": when,
        "timezone": timezone,
        "misfire": misfire,
        "next": [t.astimezone(tz).isoformat() for t in next_fire_times(trigger, first, count)],
    }
