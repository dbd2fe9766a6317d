"""The scheduler: enqueues each schedule's fires exactly once, on time, in the schedule's time zone.

Every schedule, static (``schedules.crontab`` and the actors declaring periodiq's ``periodic=``
option, ``schedules.periodic``: synced at start) or created at run time
(``schedules.runtime.add_schedule``), is an APScheduler job (``schedules.jobs``) in APScheduler's
``SQLAlchemyJobStore`` (table ``apscheduler_jobs``): its trigger (``schedules.cron.CronTrigger`` or
APScheduler's ``DateTrigger``), its next run time and its arguments survive restarts. APScheduler's
own scheduler loop is not used: ``Scheduler.tick(now)`` does its work with what it lacks (verified
with APScheduler 3.11.3):

- **one leader**: a lease row (``scheduler_leases``) renewed every tick; a standby takes over once a
  crashed leader's lease expires (``lease_seconds``), a stopping leader hands it over at once;
- **exactly once**: before sending, a fire is claimed in ``schedule_fires`` (unique per schedule and
  fire time), so even two leaders (a paused process waking up) cannot both send it; the message's
  idempotency key ``schedule:<name>:<fire time>`` gives a re-sent fire the same message id;
- **misfires by policy**: ``catch_up`` (the job's ``misfire_grace_time`` is None) runs once however
  late, ``skip`` drops fires later than the grace; several missed fires coalesce into one run, and
  each one skipped is recorded with why;
- **a controllable clock**: ``tick(now)`` takes the time, so tests run a year of fires in seconds.

A fire whose sending failed (RabbitMQ down) is retried with the same message id, backing off from
2 s to a minute between attempts, for as long as its misfire policy allows (a ``skip`` schedule's
grace, a ``catch_up`` schedule's day); then it is given up and recorded as skipped. A tick publishes
for at most ``publish_seconds`` (a third of the lease), so a slow RabbitMQ cannot outlast the lease;
what is left waits for the next tick. Every fire, enqueued, failed or skipped, is recorded
(``schedule_fires``) and handed to ``on_fire`` (``schedules.service.report``: Sentry Crons and
Prometheus); ``on_last_enqueued`` gets the recorded last enqueue of each schedule at start-up and on
taking the lead, so the gauge of the last fire survives restarts and failovers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine, Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from schedules.cron import CronError, CronTrigger
from schedules.crontab import Schedule
from schedules.jobs import (
    FIRE_FUNCTION,
    Fire,
    ScheduleError,
    check_schedule,
    crontab_job_id,
    dynamic_job_id,
    fire_key,
    job_store,
    make_job,
    misfire_policy,
)
from schedules.periodic import check_names
from schedules.runtime import (
    add_schedule,
    last_enqueued,
    last_fires,
    list_schedules,
    next_fire_times,
    remove_schedule,
)
from store.models_schedules import ScheduleFire, SchedulerLease
from store.upsert import insert_if_absent

# The names the CLI, the API and tests import from here.
__all__ = [
    "FIRE_FUNCTION",
    "Fire",
    "ScheduleError",
    "Scheduler",
    "add_schedule",
    "check_schedule",
    "crontab_job_id",
    "dynamic_job_id",
    "fire_key",
    "job_store",
    "last_fires",
    "list_schedules",
    "make_job",
    "next_fire_times",
    "remove_schedule",
]

logger = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
#: A failed fire of a ``catch_up`` schedule is retried for this long; a ``skip`` one within its grace.
RETRY_HORIZON = timedelta(days=1)
#: The wait after a failed send, doubled after each failure up to the maximum.
RETRY_BACKOFF = timedelta(seconds=2)
RETRY_MAX_BACKOFF = timedelta(minutes=1)
#: A claimed fire not enqueued after this long belonged to a scheduler that died while sending.
STALE_CLAIM = timedelta(seconds=60)
#: At most this many missed fire times are looked at per schedule (a per-minute schedule down for a week).
MAX_RUN_TIMES = 10_000

#: (actor, payload, priority, idempotency key, schedule name) -> message id
Send = Callable[[str, dict[str, Any], str | None, str, str], str]
_fires: Table = ScheduleFire.__table__  # type: ignore[assignment]
_leases: Table = SchedulerLease.__table__  # type: ignore[assignment]


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
        publish_seconds: float | None = None,
        on_fire: Callable[[Fire, Job], None] | None = None,
        on_last_enqueued: Callable[[Mapping[str, datetime]], None] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.send = send
        self.crontab = tuple(crontab)
        self.default_timezone = default_timezone
        self.holder = holder
        self.lease_seconds = lease_seconds
        # A tick that publishes past this leaves the rest for the next one, well inside the lease.
        self.publish_seconds = lease_seconds / 3 if publish_seconds is None else publish_seconds
        self.on_fire = on_fire
        self.on_last_enqueued = on_last_enqueued
        self.timer = timer
        self.store = job_store(engine)
        self.leading = False
        # Failed fires: (schedule, fire time) -> (failures, not before). In memory: a new leader
        # tries each once at once, then backs off in turn.
        self._backoff: dict[tuple[str, datetime], tuple[int, datetime]] = {}

    # -- start-up ---------------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every crontab entry (and periodic actor); raise ``ScheduleError`` naming the first
        bad one, or a name declared twice."""
        check_names(self.crontab)
        for entry in self.crontab:
            timezone = entry.timezone or self.default_timezone
            check_schedule(entry.name, entry.actor, entry.payload, entry.priority, entry.misfire, timezone)
            try:
                CronTrigger(entry.cron, timezone)
            except CronError as e:
                where = "crontab entry" if entry.source == "crontab" else "periodic actor"
                raise ScheduleError(f"{where} {entry.name!r}: {e}") from None

    def sync_crontab(self, now: datetime, jobs: Sequence[Job] | None = None) -> None:
        """Store every crontab entry as a job; keep the next run time of unchanged ones (so fires
        missed while no scheduler ran are seen as misfires), drop entries removed from the crontab.
        ``jobs``: every stored job, if already loaded."""
        wanted = {crontab_job_id(entry.name): entry for entry in self.crontab}
        for job in self.store.get_all_jobs() if jobs is None else jobs:
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
        now = now or datetime.now(UTC)
        self.validate()
        # Loaded once: syncing the crontab changes only crontab jobs, pausing only run-time ones'
        # next run times, and each step reads only what the steps before it leave as it was.
        jobs = self.store.get_all_jobs()
        self.sync_crontab(now, jobs)
        self.pause_invalid(now, jobs)
        self._report_last_enqueued(jobs)

    def pause_invalid(self, now: datetime, jobs: Sequence[Job] | None = None) -> list[str]:
        """Pause every stored run-time schedule that no longer checks out (its actor was removed, its
        arguments no longer fit): log why, loudly, and drop its pending retries, rather than failing
        it on every tick. It stays listed without next runs until replaced or removed. ``jobs``:
        every stored job, if already loaded."""
        paused = []
        for job in self.store.get_all_jobs() if jobs is None else jobs:
            if not job.id.startswith("dynamic:") or job.next_run_time is None:
                continue
            kwargs = job.kwargs
            misfire = misfire_policy(job)
            try:
                check_schedule(
                    job.name,
                    kwargs["actor"],
                    kwargs["payload"],
                    kwargs["priority"],
                    misfire,
                    kwargs["timezone"],
                )
            except ScheduleError as e:
                logger.error(
                    "Run-time schedule %s is paused: %s. Replace it (edujobs schedules add --replace) "
                    "or remove it.",
                    job.name,
                    e,
                )
                job.next_run_time = None
                self.store.update_job(job)
                with self.engine.begin() as connection:
                    connection.execute(
                        update(_fires)
                        .where(_fires.c.schedule == job.name, _fires.c.status.in_(("failed", "claimed")))
                        .values(status="skipped", note=f"schedule paused: {e}"[:2000])
                    )
                paused.append(job.name)
        return paused

    def _report_last_enqueued(self, jobs: Sequence[Job] | None = None) -> None:
        if self.on_last_enqueued is None:
            return
        stored = self.store.get_all_jobs() if jobs is None else jobs
        names = [entry.name for entry in self.crontab] + [
            job.name for job in stored if job.id.startswith("dynamic:")
        ]
        try:
            self.on_last_enqueued(last_enqueued(self.engine, names))
        except Exception:
            logger.warning("Reporting the last fires from the record failed.", exc_info=True)

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
            # The last leader's fires since our start-up are in the record, not in our gauges.
            self._report_last_enqueued()
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
        deadline = self.timer() + self.publish_seconds
        fires: list[Fire] = []
        # Fires due now before retries of failed ones: a RabbitMQ outage must not delay on-time fires.
        due = self.store.get_due_jobs(now)
        for index, job in enumerate(due):
            if self.timer() >= deadline:
                logger.warning(
                    "Scheduler tick out of publishing time (%.1f s): %d due schedules wait for the next.",
                    self.publish_seconds,
                    len(due) - index,
                )
                return fires
            fires.extend(self._run(job, now))
        fires.extend(self._retry_failed(now, deadline))
        return fires

    def _run(self, job: Job, now: datetime) -> list[Fire]:
        run_times = job._get_run_times(now)[-MAX_RUN_TIMES:]
        if not run_times:
            return []
        grace = job.misfire_grace_time
        on_time = [t for t in run_times if grace is None or (now - t).total_seconds() <= grace]
        fires: list[Fire] = []
        chosen = on_time[-1] if on_time else None
        latest_late = None
        for fire_time in run_times:
            if fire_time == chosen:
                continue
            late = (now - fire_time).total_seconds()
            if grace is not None and late > grace:  # not on time
                note = f"missed by {late:.0f} s, over the {grace} s grace (misfire policy: skip)"
                latest_late = len(fires)
            else:
                # Not an alert: the policy runs the job once for these (Sentry saw the gap itself).
                note = f"coalesced into the run for {chosen.isoformat() if chosen else 'none'}"
            fires.append(self._skip(job, fire_time, now, note))
        if latest_late is not None:  # one alert for the fires this tick dropped (all are counted)
            fires[latest_late] = dataclasses.replace(fires[latest_late], alert=True)
        for fire in fires:
            self._report(fire, job)
        if chosen is not None:
            fires.append(self._fire(job, chosen, now))
        next_run = job.trigger.get_next_fire_time(run_times[-1], now)
        if next_run is None and fires and fires[-1].status == "failed":
            # A one-off whose fire failed stays (without next runs) for its retries to find it.
            job.next_run_time = None
            self.store.update_job(job)
        elif next_run is None:
            self._remove_finished(job)
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
            logger.warning(
                "Schedule %s: fire of %s already claimed by another scheduler.",
                job.name,
                fire_time.isoformat(),
            )
            fire = Fire(job.name, fire_time, "duplicate", note="claimed by another scheduler")
            self._report(fire, job)
            return fire
        return self._send(job, fire_time, now)

    def _report(self, fire: Fire, job: Job) -> None:
        if self.on_fire is None:
            return
        try:
            self.on_fire(fire, job)
        except Exception:
            logger.warning("Reporting the fire of %s failed.", fire.schedule, exc_info=True)

    def _send(self, job: Job, fire_time: datetime, now: datetime) -> Fire:
        name, kwargs = job.name, job.kwargs
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
            failures = self._backoff.get((name, fire_time), (0, now))[0] + 1
            wait = min(RETRY_MAX_BACKOFF, RETRY_BACKOFF * 2 ** (failures - 1))
            self._backoff[(name, fire_time)] = (failures, now + wait)
            logger.error(
                "Schedule %s: could not enqueue the fire of %s (attempt %d, next in %.0f s): %s",
                name,
                fire_time.isoformat(),
                failures,
                wait.total_seconds(),
                note,
            )
            fire = Fire(name, fire_time, "failed", note=note)
        else:
            self._backoff.pop((name, fire_time), None)
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
        self._report(fire, job)
        return fire

    def _retry_failed(self, now: datetime, deadline: float) -> list[Fire]:
        """Send again the fires whose sending failed, or whose sender died before recording it, while
        their misfire policy allows; give up (record them skipped) after that."""
        statement = (
            select(ScheduleFire)
            .where(
                # A day more than the horizon, so that fires past it are given up rather than forgotten.
                ScheduleFire.fire_time > now - 2 * RETRY_HORIZON,
                or_(
                    ScheduleFire.status == "failed",
                    and_(ScheduleFire.status == "claimed", ScheduleFire.claimed_at < now - STALE_CLAIM),
                ),
            )
            .order_by(ScheduleFire.fire_time)
        )
        with Session(self.engine) as session:
            pending = [(f.schedule, f.fire_time, f.actor_name) for f in session.scalars(statement)]
        fires = []
        # Stored jobs looked up this tick, by id: a schedule with several pending fires is read once.
        memo: dict[str, Job | None] = {}
        for name, fire_time, actor in pending:
            job = self._lookup(crontab_job_id(name), memo) or self._lookup(dynamic_job_id(name), memo)
            if job is None or job.kwargs["actor"] != actor:
                continue  # the schedule was removed or changed since: nothing to re-send
            grace = job.misfire_grace_time
            horizon = RETRY_HORIZON if grace is None else min(RETRY_HORIZON, timedelta(seconds=grace))
            if now - fire_time > horizon:
                fires.append(self._give_up(job, fire_time, horizon))
                if job.next_run_time is None:
                    memo.pop(job.id, None)  # it may have been removed
                continue
            not_before = self._backoff.get((name, fire_time), (0, now))[1]
            if now < not_before:
                continue
            if self.timer() >= deadline:
                break  # the rest next tick
            fires.append(self._send(job, fire_time, now))
            if fires[-1].status == "enqueued" and job.next_run_time is None:
                self._remove_finished(job)
                memo.pop(job.id, None)  # it may have been removed
        return fires

    def _remove_finished(self, job: Job) -> None:
        if isinstance(job.trigger, DateTrigger):
            self.store.remove_job(job.id)
            logger.info("Schedule %s has no more fire times: removed.", job.name)

    def _give_up(self, job: Job, fire_time: datetime, horizon: timedelta) -> Fire:
        self._backoff.pop((job.name, fire_time), None)
        policy = misfire_policy(job)
        note = (
            f"not enqueued within {horizon.total_seconds():.0f} s of its time (misfire policy: {policy}): "
            "given up"
        )
        with self.engine.begin() as connection:
            connection.execute(
                update(_fires)
                .where(_fires.c.schedule == job.name, _fires.c.fire_time == fire_time.astimezone(UTC))
                .values(status="skipped", note=func.concat(note, "; last error: ", _fires.c.note))
            )
        logger.error("Schedule %s: fire of %s %s.", job.name, fire_time.isoformat(), note)
        fire = Fire(job.name, fire_time, "skipped", note=note, alert=True)
        self._report(fire, job)
        if job.next_run_time is None:
            self._remove_finished(job)
        return fire

    def _lookup(self, job_id: str, memo: dict[str, Job | None] | None = None) -> Job | None:
        """The stored job ``job_id``, None if there is none or it cannot be loaded; ``memo`` keeps
        what was found (a job that cannot be loaded is tried, and logged, each time)."""
        if memo is not None and job_id in memo:
            return memo[job_id]
        try:
            job: Job | None = self.store.lookup_job(job_id)
        except (JobLookupError, LookupError):
            logger.warning("Stored schedule %s cannot be loaded.", job_id, exc_info=True)
            return None
        if memo is not None:
            memo[job_id] = job
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
