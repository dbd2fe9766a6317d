"""Schedules as APScheduler jobs: what a schedule is checked for, how it is stored, how a fire is named.

Every schedule, static (the crontab) or created at run time, is an APScheduler ``Job`` in APScheduler's
``SQLAlchemyJobStore`` (table ``apscheduler_jobs``), naming ``schedules.fire:enqueue`` and carrying the
schedule's actor, arguments, priority and time zone; ``schedules.scheduler`` drives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, MetaData, inspect

from contracts.errors import EdujobsError, UnknownActorError
from contracts.priorities import PRIORITIES
from contracts.registry import all_contracts, get_contract
from schedules.cron import CronError, CronTrigger, zone
from schedules.crontab import MISFIRE_POLICIES, NAME

FIRE_FUNCTION = "schedules.fire:enqueue"


class ScheduleError(EdujobsError, ValueError):
    """Raised for an invalid schedule (unknown actor, bad payload, cron, time zone, name), saying what."""


@dataclass(frozen=True)
class Fire:
    """What became of one fire time of a schedule."""

    schedule: str
    fire_time: datetime
    #: enqueued | failed | skipped (by the misfire policy, or given up) | duplicate (another
    #: scheduler claimed it first and sends it: two leaders for a moment)
    status: str
    message_id: str | None = None
    note: str | None = None
    #: Whether monitoring should raise it: a fire skipped for being too late. Of the fires one tick
    #: skips for a schedule only the latest alerts (a week down must not make 10,000 alerts).
    alert: bool = False


def fire_key(schedule: str, fire_time: datetime) -> str:
    """The idempotency key of one fire: the same for every attempt to send it."""
    return f"schedule:{schedule}:{fire_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def check_schedule(
    name: str, actor: str, payload: dict[str, Any], priority: str | None, misfire: str, timezone: str
) -> None:
    """Raise ``ScheduleError`` saying what is wrong with a schedule, before anything is stored."""
    if not NAME.match(name):
        raise ScheduleError(f"schedule name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
    try:
        contract = get_contract(actor)
    except UnknownActorError:
        known = ", ".join(sorted(all_contracts()))
        raise ScheduleError(
            f"schedule {name!r} names the unknown actor {actor!r}; known actors: {known}"
        ) from None
    try:
        contract.validate(payload)
    except EdujobsError as e:
        raise ScheduleError(f"schedule {name!r}: {e}") from None
    if priority is not None and priority not in PRIORITIES:
        raise ScheduleError(
            f"schedule {name!r}: priority {priority!r} is not critical, high, normal, low or bulk"
        )
    if misfire not in MISFIRE_POLICIES:
        raise ScheduleError(f"schedule {name!r}: misfire policy {misfire!r} is not catch_up or skip")
    try:
        zone(timezone)
    except CronError as e:
        raise ScheduleError(f"schedule {name!r}: {e}") from None


class MigratedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """APScheduler's ``SQLAlchemyJobStore`` on a table only the migrations create.

    The stock ``start`` creates ``apscheduler_jobs`` when it is missing: on a database nobody
    migrated yet, ``edujobs schedules`` then made the table, and the migration that creates it
    failed ever after. Here a missing table is ``NotMigratedError`` ("run `edujobs db upgrade`")."""

    def start(self, scheduler: Any, alias: str) -> None:
        BaseJobStore.start(self, scheduler, alias)
        if not inspect(self.engine).has_table(self.jobs_t.name, schema=self.jobs_t.schema):
            from store.migrate import NotMigratedError, check_migrated  # alembic: 0.5 s to import

            check_migrated(self.engine)  # says which revision the database is at, and what to run
            raise NotMigratedError(f"the database has no {self.jobs_t.name} table: run `edujobs db upgrade`")


@lru_cache(maxsize=16)
def job_store(engine: Engine) -> SQLAlchemyJobStore:
    """APScheduler's job store on edujobs' database (its table comes from the migrations).

    One per engine (by identity), started (its table checked) once: the store keeps no state of its
    own between calls, so the scheduler and every API or CLI request on an engine can share it.
    ``NotMigratedError`` if the table is missing (nothing is created)."""
    store = MigratedJobStore(engine=engine, metadata=MetaData())
    store.start(_NO_SCHEDULER, "default")
    return store


class _NoScheduler:
    """Jobs need a scheduler reference (for its time zone, to read naive times: none are given here);
    nothing lets APScheduler run them itself."""

    timezone = UTC


_NO_SCHEDULER = _NoScheduler()


def make_job(
    *,
    job_id: str,
    name: str,
    actor: str,
    payload: dict[str, Any],
    priority: str | None,
    trigger: CronTrigger | DateTrigger,
    misfire: str,
    grace_seconds: int,
    next_run_time: datetime | None,
    timezone: str,
) -> Job:
    return Job(
        _NO_SCHEDULER,
        id=job_id,
        func=FIRE_FUNCTION,
        trigger=trigger,
        executor="default",
        args=(),
        kwargs={
            "schedule": name,
            "actor": actor,
            "payload": payload,
            "priority": priority,
            "timezone": timezone,
        },
        name=name,
        misfire_grace_time=None if misfire == "catch_up" else grace_seconds,
        coalesce=True,
        max_instances=1,
        next_run_time=next_run_time,
    )


def misfire_policy(job: Job) -> str:
    """The misfire policy ``make_job`` stored in ``job``: ``catch_up`` has no grace time."""
    return "catch_up" if job.misfire_grace_time is None else "skip"


def monitor_of(job: Job) -> dict[str, Any] | None:
    """The Sentry Crons monitor of a recurring schedule (None for a one-off): its crontab, time zone
    and check-in margin in minutes (a ``skip`` schedule's grace, else 10). Fires carry it in their
    ``schedule_monitor`` option, so the worker that starts one can describe the monitor to Sentry."""
    if not isinstance(job.trigger, CronTrigger):
        return None
    grace = job.misfire_grace_time
    return {
        "crontab": job.trigger.expression,
        "timezone": job.trigger.timezone,
        "checkin_margin": max(1, int(grace // 60)) if grace is not None else 10,
    }


def crontab_job_id(name: str) -> str:
    return f"crontab:{name}"


def dynamic_job_id(name: str) -> str:
    return f"dynamic:{name}"
