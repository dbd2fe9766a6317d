"""Sentry Crons follows the job: the worker that runs a schedule's fire checks it in (``in_progress``,
then ``ok`` or ``error``, one check-in id), the scheduler sends no ``ok`` at enqueue, and a fire that
does not start sends nothing (Sentry, knowing the monitor's schedule and margin, reports it missed).

One ``dramatiq actors`` worker (with the test actors) for the module, a fake Sentry for it and for
this process's scheduler (the real sentry-sdk on both sides).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pika
import pytest
import sentry_sdk
from sqlalchemy import Engine

from brokers.client import Client
from middleware.crons import check_in_id
from middleware.sentry import init_sentry
from ops import queues
from schedules.crontab import Schedule
from schedules.fire import send_fire
from schedules.jobs import fire_key
from schedules.scheduler import Scheduler
from schedules.service import report
from store.db import make_engine
from tests.amqp import depth, dramatiq_message, publish, take
from tests.e2e.conftest import module_worker
from tests.fakes.sentry import FakeSentry
from tests.worker import WorkerProcess, wait_until

PARIS = ZoneInfo("Europe/Paris")
KEY = b"test-signing-key"
MONITOR = {"crontab": "0 3 * * sun", "timezone": "Europe/Paris", "checkin_margin": 30}


@pytest.fixture(scope="module")
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry().start()
    # This process's scheduler reports to the same fake Sentry as the worker.
    assert init_sentry(dsn=server.dsn, environment="test")
    yield server
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)
    server.stop()


@pytest.fixture(scope="module")
def worker(sentry: FakeSentry) -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    with module_worker(EDUJOBS_SENTRY_DSN=sentry.dsn) as started:
        yield started


@pytest.fixture(scope="module")
def engine(worker: tuple[dict[str, str], WorkerProcess]) -> Iterator[Engine]:
    engine = make_engine(worker[0]["EDUJOBS_DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def client(worker: tuple[dict[str, str], WorkerProcess]) -> Iterator[Client]:
    producer = Client(worker[0]["EDUJOBS_RABBITMQ_URL"], signing_key=KEY)
    yield producer
    producer.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


def weekly_scheduler(engine: Engine, client: Client, name: str) -> Scheduler:
    """This process's scheduler of one weekly schedule, publishing to the worker's RabbitMQ."""
    schedule = Schedule(
        name,
        "notifications.send_weekly_digests",
        "0 3 * * sun",
        timezone="Europe/Paris",
        misfire="skip",
        grace_seconds=1800,
    )
    return Scheduler(
        engine=engine,
        send=functools.partial(send_fire, client, engine),
        crontab=(schedule,),
        default_timezone="UTC",
        holder="e2e-test",  # one holder: the schedulers of the tests share the lease
        on_fire=report,
    )


def check_ins(sentry: FakeSentry, fire: str) -> list[dict[str, Any]]:
    return [c for c in sentry.check_ins() if c["check_in_id"] == check_in_id(fire)]


def statuses(sentry: FakeSentry, fire: str, until: str, timeout: float = 30.0) -> list[str]:
    """The statuses of a fire's check-ins, once one of them is ``until``."""
    wait_until(lambda: until in [c["status"] for c in check_ins(sentry, fire)], timeout=timeout)
    return [c["status"] for c in check_ins(sentry, fire)]


def send_fire_message(
    url: str, actor: str, kwargs: dict[str, Any], schedule: str, fire: str, *, key: bytes | None = KEY
) -> None:
    """A fire as the scheduler sends it, of a test actor (they have no contract for the client)."""
    options = {"idempotency_key": fire, "schedule": schedule, "schedule_monitor": MONITOR}
    publish(url, "maintenance", dramatiq_message(actor, "maintenance", kwargs, key=key, options=options))


def test_a_fire_that_runs_checks_in_in_progress_then_ok_under_one_id(
    worker: tuple[dict[str, str], WorkerProcess], engine: Engine, client: Client, sentry: FakeSentry
) -> None:
    # Given the scheduler of a weekly Paris schedule
    scheduler = weekly_scheduler(engine, client, "e2e-weekly")
    scheduler.start(now=at("2026-11-28T12:00"))
    # When its Sunday fire is due: the scheduler enqueues it, and the worker runs the job
    [fire] = scheduler.tick(at("2026-11-29T03:00:05"))
    assert fire.status == "enqueued"
    key = fire_key("e2e-weekly", at("2026-11-29T03:00"))
    # Then Sentry hears of it from the worker: in progress, then ok, under the same check-in id
    assert statuses(sentry, key, "ok") == ["in_progress", "ok"]
    started, ok = check_ins(sentry, key)
    assert started["monitor_slug"] == ok["monitor_slug"] == "edujobs-e2e-weekly"
    # the in_progress describes the monitor: Sentry knows when to expect the next one, and how late
    config = started["monitor_config"]
    assert config["schedule"] == {"type": "crontab", "value": "0 3 * * sun"}
    assert config["timezone"] == "Europe/Paris"
    assert config["checkin_margin"] == 30
    # (the actor's whole life: 4 attempts of 10 min and 3 backoffs of at most 10 min)
    assert config["max_runtime"] == 70
    assert ok["duration"] >= 0
    # And the scheduler itself sent no ok for the enqueue
    sentry_sdk.flush(timeout=5)
    assert [c["status"] for c in check_ins(sentry, key)] == ["in_progress", "ok"]


def test_a_fire_that_fails_for_good_or_is_dead_lettered_checks_in_an_error(
    worker: tuple[dict[str, str], WorkerProcess], sentry: FakeSentry
) -> None:
    url = worker[0]["EDUJOBS_RABBITMQ_URL"]
    permanent = "schedule:e2e-permanent:2026-11-29T02:00:00Z"
    transient = "schedule:e2e-transient:2026-11-29T02:00:00Z"
    unsigned = "schedule:e2e-unsigned:2026-11-29T02:00:00Z"
    # Given fires whose job fails permanently, fails until its retries are spent, or is not signed
    send_fire_message(url, "testing.fail_permanently", {"user_id": 7}, "e2e-permanent", permanent)
    send_fire_message(url, "testing.fail_transiently", {}, "e2e-transient", transient)
    send_fire_message(url, "testing.fail_permanently", {"user_id": 7}, "e2e-unsigned", unsigned, key=None)
    # When each is dead-lettered
    reasons = sorted(m.headers["x-edujobs-reason"] for m in take(url, "maintenance.XQ", 3))
    assert reasons == ["bad_signature", "permanent_error", "retries_exhausted"]
    # Then each fire's monitor got an error, never an ok
    assert statuses(sentry, permanent, "error") == ["in_progress", "error"]
    # the retried one stayed in progress across its attempts (one in_progress per attempt)
    assert statuses(sentry, transient, "error") == ["in_progress"] * 3 + ["error"]
    # the refused one never started
    assert statuses(sentry, unsigned, "error") == ["error"]
    slugs = {c["monitor_slug"] for fire in (permanent, transient, unsigned) for c in check_ins(sentry, fire)}
    assert slugs == {"edujobs-e2e-permanent", "edujobs-e2e-transient", "edujobs-e2e-unsigned"}


def test_a_fire_that_does_not_start_sends_no_check_in_until_it_starts(
    worker: tuple[dict[str, str], WorkerProcess], engine: Engine, client: Client, sentry: FakeSentry
) -> None:
    url = worker[0]["EDUJOBS_RABBITMQ_URL"]
    scheduler = weekly_scheduler(engine, client, "e2e-stalled")
    scheduler.start(now=at("2026-11-28T12:00"))
    # Given a schedule whose first fire ran: Sentry knows its monitor (schedule, zone, margin)
    scheduler.tick(at("2026-11-29T03:00:05"))
    first = fire_key("e2e-stalled", at("2026-11-29T03:00"))
    assert statuses(sentry, first, "ok") == ["in_progress", "ok"]
    assert check_ins(sentry, first)[0]["monitor_config"]["checkin_margin"] == 30
    # And the workers no longer take its queue (paused by an operator)
    queues.pause(engine, "notifications", by="test")
    try:
        wait_until(lambda: consumers(url, "notifications") == 0, timeout=30)
        # When the next fire is enqueued
        [fire] = scheduler.tick(at("2026-12-06T03:00:05"))
        assert fire.status == "enqueued"
        second = fire_key("e2e-stalled", at("2026-12-06T03:00"))
        sentry_sdk.flush(timeout=5)
        # Then it waits in the queue and nobody checked it in: no ok for a job that did not run,
        # so Sentry reports it missed once the margin is past
        assert depth(url, "notifications") == 1
        assert check_ins(sentry, second) == []
    finally:
        queues.resume(engine, "notifications", by="test")
    # And once the queue is resumed the job runs, and checks in then
    assert statuses(sentry, second, "ok") == ["in_progress", "ok"]


def consumers(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()
