"""The scheduler process (``edujobs scheduler``): configuration, reporting, signals.

Reporting of each fire: the Prometheus gauge ``edujobs_schedule_last_enqueued_timestamp_seconds``
(when the last fire of each schedule was enqueued; filled from the record at start-up and on taking
the lead, so a monthly job has its series after a restart) and counter
``edujobs_schedule_fires_total`` (by schedule and outcome: enqueued, failed, skipped, duplicate),
served on ``EDUJOBS_SCHEDULER_METRICS_PORT``; the workers' Metrics middleware adds
``edujobs_schedule_last_success_timestamp_seconds`` (when the job itself last succeeded). Sentry
Crons (``EDUJOBS_SENTRY_DSN``) follows the job: the worker that runs a fire checks in
``in_progress``, then ``ok`` or ``error`` (``middleware.crons``), and Sentry reports a fire that does
not start within the margin as missed. An enqueue is not a success, so the scheduler sends no ``ok``:
it checks in only the fires that will not run, as ``error``: a send that failed, fires skipped for
being late (once per tick and schedule). None for a fire coalesced into a catch-up run or sent by
another scheduler.

The schedules are the crontab (``EDUJOBS_SCHEDULER_CRONTAB``) and the periodic actors of the modules
named by ``EDUJOBS_SCHEDULER_ACTORS`` (``schedules.periodic``): ``load_schedules``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import FrameType

from apscheduler.job import Job
from prometheus_client import Counter, Gauge, start_http_server

from brokers.settings import Settings
from schedules.cron import CronTrigger
from schedules.crontab import Schedule
from schedules.jobs import monitor_of
from schedules.periodic import check_names, periodic_schedules
from schedules.scheduler import Fire, ScheduleError, Scheduler

logger = logging.getLogger(__name__)

LAST_ENQUEUED = Gauge(
    "edujobs_schedule_last_enqueued_timestamp_seconds",
    "When the last fire of a schedule was enqueued (UNIX time).",
    ["schedule"],
)
FIRES = Counter("edujobs_schedule_fires_total", "Fires of a schedule by outcome.", ["schedule", "outcome"])


def load_crontab(reference: str) -> tuple[Schedule, ...]:
    """The crontab named ``module:attribute`` (``EDUJOBS_SCHEDULER_CRONTAB``)."""
    module_name, _, attribute = reference.partition(":")
    try:
        crontab = getattr(importlib.import_module(module_name), attribute or "CRONTAB")
    except (ImportError, AttributeError) as e:
        raise ScheduleError(f"cannot load the crontab {reference!r}: {e}") from None
    if not all(isinstance(entry, Schedule) for entry in crontab):
        raise ScheduleError(f"{reference!r} is not a sequence of schedules.crontab.Schedule")
    return tuple(crontab)


def load_schedules(settings: Settings) -> tuple[Schedule, ...]:
    """Every static schedule: the crontab (``EDUJOBS_SCHEDULER_CRONTAB``), then the periodic actors
    of ``EDUJOBS_SCHEDULER_ACTORS``; ``ScheduleError`` if one cannot be loaded or a name is taken twice."""
    schedules = load_crontab(settings.scheduler_crontab) + periodic_schedules(
        settings.scheduler_actors.split(",")
    )
    check_names(schedules)
    return schedules


def report(fire: Fire, job: Job) -> None:
    """Record a fire in Prometheus and, for a recurring schedule, check in with Sentry Crons."""
    FIRES.labels(fire.schedule, fire.status).inc()
    if fire.status == "enqueued":
        LAST_ENQUEUED.labels(fire.schedule).set_to_current_time()
    if not isinstance(job.trigger, CronTrigger):
        return
    # An enqueued fire checks in from the worker that runs it; a duplicate or coalesced one runs.
    if fire.status not in ("failed", "skipped") or (fire.status == "skipped" and not fire.alert):
        return
    import sentry_sdk

    from middleware.crons import monitor_slug
    from middleware.sentry import capture_check_in

    if not sentry_sdk.get_client().is_active():
        return
    monitor = monitor_of(job)
    if monitor is None:
        return
    # A check-in of its own (not the fire's): a failed send is retried, and the worker that runs
    # it later checks the fire in under the fire's id.
    capture_check_in(
        monitor_slug(fire.schedule),
        "error",
        schedule=monitor["crontab"],
        timezone=monitor["timezone"],
        checkin_margin_minutes=monitor["checkin_margin"],
    )


def report_last_enqueued(last: Mapping[str, datetime]) -> None:
    """Set the gauge of each schedule's last enqueue from the record (a restart, a new leader)."""
    for schedule, enqueued_at in last.items():
        LAST_ENQUEUED.labels(schedule).set(enqueued_at.timestamp())


def build(
    settings: Settings, crontab: Sequence[Schedule] | None = None, holder: str | None = None
) -> Scheduler:
    from schedules.fire import send
    from store.db import get_engine
    from store.migrate import check_migrated

    engine = get_engine()
    check_migrated(engine)  # the scheduler starts only on a migrated database: it creates no table
    return Scheduler(
        engine=engine,
        send=send,
        crontab=load_schedules(settings) if crontab is None else crontab,
        default_timezone=settings.schedule_timezone,
        holder=holder or f"{socket.gethostname()}:{os.getpid()}",
        lease_seconds=settings.scheduler_lease_seconds,
        on_fire=report,
        on_last_enqueued=report_last_enqueued,
    )


def run(settings: Settings) -> None:
    """Run the scheduler until SIGTERM or SIGINT; ``ScheduleError`` if the crontab is invalid,
    ``NotMigratedError`` if the database is not migrated."""
    from brokers.stack import start_sentry

    start_sentry(settings)
    scheduler = build(settings)
    scheduler.start()  # validates the crontab first: a bad entry stops start-up here
    if settings.scheduler_metrics_port:
        start_http_server(settings.scheduler_metrics_port, addr=settings.metrics_host)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Scheduler stopping (signal %d).", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info(
        "Scheduler %s running %d crontab and periodic-actor schedules (time zone %s), ticking every %.1f s.",
        scheduler.holder,
        len(scheduler.crontab),
        settings.schedule_timezone,
        settings.scheduler_tick_seconds,
    )
    scheduler.run(stop, interval=settings.scheduler_tick_seconds)
    logger.info("Scheduler stopped.")
