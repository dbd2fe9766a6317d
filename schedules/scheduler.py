"""The scheduler: enqueues each schedule's fires exactly once, on time, in the schedule's time zone.

Every schedule, static (``schedules.crontab``, synced at start) or created at run time
(``add_schedule``), is an APScheduler job in APScheduler's ``SQLAlchemyJobStore`` (table
``apscheduler_jobs``): its trigger (``schedules.cron.CronTrigger`` or APScheduler's ``DateTrigger``),
its next run time and its arguments survive restarts. APScheduler's own scheduler loop is not used:
``Scheduler.tick(now)`` does its work with what it lacks (verified with APScheduler 3.11.3):

- **one leader**: a lease row (``scheduler_leases``) renewed every tick; a standby takes over once a
  crashed leader's lease expires (``lease_seconds``), a stopping leader hands it over at once;
- **exactly once**: before sending, a fire is claimed in ``schedule_fires`` (unique per schedule and
  fire time), so even two leaders (a paused process waking up) cannot both send it; the message's
  idempotency key ``schedule:<name>:<fire time>`` gives a re-sent fire the same message id;
- **misfires by policy**: ``catch_up`` (the job's ``misfire_grace_time`` is None) runs once however
  late, ``skip`` drops fires later than the grace; several missed fires coalesce into one run, and
  each one skipped is recorded with why;
- **a controllable clock**: ``tick(now)`` takes the time, so tests run a year of fires in seconds.

A fire whose sending failed (RabbitMQ down) is retried every tick for a day, with the same message id.
Each fire is recorded (``schedule_fires``), reported to Sentry Crons (a check-in per static schedule,
so a missed run alerts) and to Prometheus (``edujobs_schedule_last_enqueued_timestamp_seconds``;
the workers' ``edujobs_schedule_last_success_timestamp_seconds`` says when the job then succeeded).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, MetaData, Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from contracts.errors import EdujobsError, UnknownActorError
from contracts.registry import all_contracts, get_contract
from schedules.cron import CronError, CronTrigger, resolve, zone
from schedules.crontab import MISFIRE_POLICIES, NAME, Schedule
from store.models_schedules import ScheduleFire, SchedulerLease
from store.upsert import insert_if_absent

logger = logging.getLogger(__name__)

FIRE_FUNCTION = "schedules.fire:enqueue"
LEASE_NAME = "scheduler"
#: A fire older than this is not retried any more (its failure stays recorded).
RETRY_HORIZON = timedelta(days=1)
#: A claimed fire not enqueued after this long belonged to a scheduler that died while sending.
STALE_CLAIM = timedelta(seconds=60)
#: At most this many missed fire times are looked at per schedule (a per-minute schedule down for a week).
MAX_RUN_TIMES = 10_000

#: (actor, payload, priority, idempotency key, schedule name) -> message id
Send = Callable[[str, dict[str, Any], str | None, str, str], str]
_fires: Table = ScheduleFire.__table__  # type: ignore[assignment]
_leases: Table = SchedulerLease.__table__  # type: ignore[assignment]


class ScheduleError(EdujobsError, ValueError):
    """Raised for an invalid schedule (unknown actor, bad payload, cron, time zone, name), saying what."""


@dataclass(frozen=True)
class Fire:
    """What became of one fire time of a schedule."""

    schedule: str
    fire_time: datetime
    status: str  # enqueued | skipped | failed
    message_id: str | None = None
    note: str | None = None


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
    if priority is not None and priority not in ("critical", "high", "normal", "low", "bulk"):
        raise ScheduleError(
            f"schedule {name!r}: priority {priority!r} is not critical, high, normal, low or bulk"
        )
    if misfire not in MISFIRE_POLICIES:
        raise ScheduleError(f"schedule {name!r}: misfire policy {misfire!r} is not catch_up or skip")
    try:
        zone(timezone)
    except CronError as e:
        raise ScheduleError(f"schedule {name!r}: {e}") from None


def job_store(engine: Engine) -> SQLAlchemyJobStore:
    """APScheduler's job store on edujobs' database (its table comes from the migrations)."""
    store = SQLAlchemyJobStore(engine=engine, metadata=MetaData())
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


def crontab_job_id(name: str) -> str:
    return f"crontab:{name}"


def dynamic_job_id(name: str) -> str:
    return f"dynamic:{name}"


class Scheduler:
    """Enqueues due fires; only the process holding the lease does."""

    def __init__(
        self,
        *,
        engine: Engine,
        send: Send,
        crontab: Sequence[Schedule],
        default_timezone: str,
        holder: str,
        lease_seconds: float = 15.0,
        on_fire: Callable[[Fire, Job], None] | None = None,
    ) -> None:
        self.engine = engine
        self.send = send
        self.crontab = tuple(crontab)
        self.default_timezone = default_timezone
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.on_fire = on_fire
        self.store = job_store(engine)
        self.leading = False

    # -- start-up ---------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every crontab entry; raise ``ScheduleError`` naming the first bad one."""
        seen: set[str] = set()
        for entry in self.crontab:
            if entry.name in seen:
                raise ScheduleError(f"two crontab entries are named {entry.name!r}")
            seen.add(entry.name)
            timezone = entry.timezone or self.default_timezone
            check_schedule(entry.name, entry.actor, entry.payload, entry.priority, entry.misfire, timezone)
            try:
                CronTrigger(entry.cron, timezone)
            except CronError as e:
                raise ScheduleError(f"crontab entry {entry.name!r}: {e}") from None

    def sync_crontab(self, now: datetime) -> None:
        """Store every crontab entry as a job; keep the next run time of unchanged ones (so fires
        missed while no scheduler ran are seen as misfires), drop entries removed from the crontab."""
        wanted = {crontab_job_id(entry.name): entry for entry in self.crontab}
        for job in self.store.get_all_jobs():
            if job.id.startswith("crontab:") and job.id not in wanted:
                self.store.remove_job(job.id)
                logger.info("Schedule %s is no longer in the crontab: removed.", job.name)
        for job_id, entry in wanted.items():
            trigger = CronTrigger(entry.cron, entry.timezone or self.default_timezone)
            existing = self._lookup(job_id)
            unchanged = (
                existing is not None
                and isinstance(existing.trigger, CronTrigger)
                and (existing.trigger.expression, existing.trigger.timezone)
                == (trigger.expression, trigger.timezone)
                and existing.next_run_time is not None
            )
            next_run = (
                existing.next_run_time if unchanged and existing else trigger.get_next_fire_time(None, now)
            )
            job = make_job(
                job_id=job_id,
                name=entry.name,
                actor=entry.actor,
                payload=entry.payload,
                priority=entry.priority,
                trigger=trigger,
                misfire=entry.misfire,
                grace_seconds=entry.grace_seconds,
                next_run_time=next_run,
                timezone=trigger.timezone,
            )
            if existing is None:
                self.store.add_job(job)
            else:
                self.store.update_job(job)

    def start(self, now: datetime | None = None) -> None:
        self.validate()
        self.sync_crontab(now or datetime.now(UTC))

    # -- leadership -------------------------------------------------------------------------------

    def lead(self, now: datetime) -> bool:
        """Take or renew the lease; True while this process leads."""
        expires = now + timedelta(seconds=self.lease_seconds)
        with self.engine.begin() as connection:
            renewed = connection.execute(
                update(_leases)
                .where(
                    _leases.c.name == LEASE_NAME,
                    or_(_leases.c.holder == self.holder, _leases.c.expires_at < now),
                )
                .values(holder=self.holder, expires_at=expires)
                .returning(_leases.c.holder)
            ).first()
            if renewed is None:
                renewed_now = insert_if_absent(
                    connection,
                    _leases,
                    {"name": LEASE_NAME, "holder": self.holder, "acquired_at": now, "expires_at": expires},
                    keys=["name"],
                )
                leading = renewed_now
            else:
                leading = True
        if leading and not self.leading:
            logger.info("Scheduler %s leads (lease of %.0f s).", self.holder, self.lease_seconds)
        elif not leading and self.leading:
            logger.warning("Scheduler %s lost the lead.", self.holder)
        self.leading = leading
        return leading

    def release(self) -> None:
        """Hand the lease over at once (a stopping leader), so a standby need not wait for it to expire."""
        with self.engine.begin() as connection:
            connection.execute(
                update(_leases)
                .where(_leases.c.name == LEASE_NAME, _leases.c.holder == self.holder)
                .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
            )
        self.leading = False

    # -- firing -----------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[Fire]:
        """Enqueue every fire due at ``now`` (if this process leads); return what became of each."""
        now = now or datetime.now(UTC)
        if not self.lead(now):
            return []
        fires = self._retry_failed(now)
        for job in self.store.get_due_jobs(now):
            fires.extend(self._run(job, now))
        return fires

    def _run(self, job: Job, now: datetime) -> list[Fire]:
        run_times = job._get_run_times(now)[-MAX_RUN_TIMES:]
        if not run_times:
            return []
        grace = job.misfire_grace_time
        on_time = [t for t in run_times if grace is None or (now - t).total_seconds() <= grace]
        fires: list[Fire] = []
        chosen = on_time[-1] if on_time else None
        for fire_time in run_times:
            if fire_time == chosen:
                continue
            if grace is not None and fire_time not in on_time:
                late = (now - fire_time).total_seconds()
                note = f"missed by {late:.0f} s, over the {grace} s grace (misfire policy: skip)"
            else:
                note = f"coalesced into the run for {chosen.isoformat() if chosen else 'none'}"
            fires.append(self._skip(job, fire_time, now, note))
        if chosen is not None:
            fires.append(self._fire(job, chosen, now))
        next_run = job.trigger.get_next_fire_time(run_times[-1], now)
        if next_run is None:
            self.store.remove_job(job.id)
            logger.info("Schedule %s has no more fire times: removed.", job.name)
        else:
            job.next_run_time = next_run
            self.store.update_job(job)
        return fires

    def _claim(self, job: Job, fire_time: datetime, now: datetime, status: str, note: str | None) -> bool:
        with self.engine.begin() as connection:
            return insert_if_absent(
                connection,
                _fires,
                {
                    "schedule": job.name,
                    "fire_time": fire_time.astimezone(UTC),
                    "status": status,
                    "actor_name": job.kwargs["actor"],
                    "claimed_by": self.holder,
                    "claimed_at": now,
                    "note": note,
                },
                keys=["schedule", "fire_time"],
            )

    def _skip(self, job: Job, fire_time: datetime, now: datetime, note: str) -> Fire:
        if self._claim(job, fire_time, now, "skipped", note):
            logger.warning("Schedule %s: fire of %s skipped: %s.", job.name, fire_time.isoformat(), note)
        return Fire(job.name, fire_time, "skipped", note=note)

    def _fire(self, job: Job, fire_time: datetime, now: datetime) -> Fire:
        if not self._claim(job, fire_time, now, "claimed", None):
            # Another scheduler claimed it (two leaders for a moment): it sends it, not us.
            return Fire(job.name, fire_time, "skipped", note="claimed by another scheduler")
        return self._send(job.name, dict(job.kwargs), fire_time, job)

    def _send(self, name: str, kwargs: dict[str, Any], fire_time: datetime, job: Job | None) -> Fire:
        key = fire_key(name, fire_time)
        where = and_(_fires.c.schedule == name, _fires.c.fire_time == fire_time.astimezone(UTC))
        try:
            message_id = self.send(
                kwargs["actor"], dict(kwargs["payload"]), kwargs.get("priority"), key, name
            )
        except Exception as e:
            note = f"{type(e).__name__}: {e}"[:2000]
            with self.engine.begin() as connection:
                connection.execute(update(_fires).where(where).values(status="failed", note=note))
            logger.error(
                "Schedule %s: could not enqueue the fire of %s: %s", name, fire_time.isoformat(), note
            )
            fire = Fire(name, fire_time, "failed", note=note)
        else:
            with self.engine.begin() as connection:
                connection.execute(
                    update(_fires)
                    .where(where)
                    .values(
                        status="enqueued", message_id=message_id, enqueued_at=datetime.now(UTC), note=None
                    )
                )
            logger.info(
                "Schedule %s: enqueued %s for %s as %s.",
                name,
                kwargs["actor"],
                fire_time.isoformat(),
                message_id,
            )
            fire = Fire(name, fire_time, "enqueued", message_id=message_id)
        if self.on_fire is not None and job is not None:
            try:
                self.on_fire(fire, job)
            except Exception:
                logger.warning("Reporting the fire of %s failed.", name, exc_info=True)
        return fire

    def _retry_failed(self, now: datetime) -> list[Fire]:
        """Send again the fires whose sending failed, or whose sender died before recording it."""
        statement = select(ScheduleFire).where(
            ScheduleFire.fire_time > now - RETRY_HORIZON,
            or_(
                ScheduleFire.status == "failed",
                and_(ScheduleFire.status == "claimed", ScheduleFire.claimed_at < now - STALE_CLAIM),
            ),
        )
        with Session(self.engine) as session:
            pending = [(f.schedule, f.fire_time, f.actor_name) for f in session.scalars(statement)]
        fires = []
        for name, fire_time, actor in pending:
            job = self._lookup(crontab_job_id(name)) or self._lookup(dynamic_job_id(name))
            kwargs = dict(job.kwargs) if job is not None else None
            if kwargs is None or kwargs["actor"] != actor:
                continue  # the schedule was removed or changed since: nothing to re-send
            fires.append(self._send(name, kwargs, fire_time, job))
        return fires

    def _lookup(self, job_id: str) -> Job | None:
        try:
            job: Job | None = self.store.lookup_job(job_id)
        except (JobLookupError, LookupError):
            logger.warning("Stored schedule %s cannot be loaded.", job_id, exc_info=True)
            return None
        return job

    # -- running ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set; then hand the lease over."""
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:
                    logger.exception("Scheduler tick failed; trying again in %.0f s.", interval)
                    self.leading = False
                stop.wait(interval)
        finally:
            try:
                self.release()
            except Exception:
                logger.warning("Could not release the scheduler lease; it expires by itself.", exc_info=True)


# -- run-time schedules -----------------------------------------------------------------------------


def add_schedule(
    engine: Engine,
    name: str,
    actor: str,
    payload: dict[str, Any],
    *,
    at: datetime | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
    priority: str | None = None,
    misfire: str = "catch_up",
    grace_seconds: int = 600,
    replace: bool = False,
    now: datetime | None = None,
) -> Job:
    """Store a schedule created at run time: one-off ``at`` (naive = wall time in ``timezone``) or
    recurring ``cron``. The running scheduler picks it up at its next tick; it survives restarts."""
    now = now or datetime.now(UTC)
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


def list_schedules(
    engine: Engine,
    crontab: Sequence[Schedule],
    default_timezone: str,
    *,
    now: datetime | None = None,
    count: int = 3,
) -> list[dict[str, Any]]:
    """Every schedule, crontab then run-time: its next ``count`` fire times in its own time zone,
    and its last fire."""
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
                entry.name, "crontab", entry.actor, entry.cron, timezone, entry.misfire, trigger, first, count
            )
            | {"description": entry.description, "payload": entry.payload, "priority": entry.priority}
        )
    for job_id, job in sorted(stored.items()):
        if not job_id.startswith("dynamic:"):
            continue
        trigger = job.trigger
        timezone = str(job.kwargs.get("timezone") or "UTC")
        what = trigger.expression if isinstance(trigger, CronTrigger) else "once"
        misfire = "catch_up" if job.misfire_grace_time is None else "skip"
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
                "fire_time": fire.fire_time.isoformat(),
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
