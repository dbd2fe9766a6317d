"""The scheduler after things went wrong, with a controllable clock, on PostgreSQL and the real
RabbitMQ: the last-fire gauge after a restart or failover, retries within the misfire policy with
backoff, a tick's publishing bound, a crash between claim and send, stored schedules whose actor is
gone."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import brokers.client
from brokers.client import Client, message_id_for
from brokers.topology import DOMAIN_QUEUES
from schedules.crontab import Schedule
from schedules.fire import send as send_to_rabbitmq
from schedules.scheduler import add_schedule, dynamic_job_id, fire_key, job_store, list_schedules
from schedules.service import LAST_ENQUEUED, report_last_enqueued
from store.models_schedules import ScheduleFire
from tests.amqp import depth, take
from tests.integration.test_client import free_port
from tests.integration.test_dlq import topology  # noqa: F401  (fixture)
from tests.integration.test_scheduler import (  # noqa: F401  (engine: fixture)
    DIGESTS,
    SKIPPY,
    at,
    engine,
    fires,
    scheduler,
)

UTC_ZONE = ZoneInfo("UTC")


def gauge(schedule: str) -> float | None:
    return REGISTRY.get_sample_value(
        "edujobs_schedule_last_enqueued_timestamp_seconds", {"schedule": schedule}
    )


def enqueued_at(database: Engine, schedule: str) -> list[float]:
    with Session(database) as session:
        rows = session.scalars(
            select(ScheduleFire)
            .where(ScheduleFire.schedule == schedule, ScheduleFire.status == "enqueued")
            .order_by(ScheduleFire.fire_time)
        )
        return [row.enqueued_at.timestamp() for row in rows if row.enqueued_at is not None]


@pytest.fixture
def empty_gauge() -> Iterator[None]:
    """A process that just started: no series for the schedule yet."""
    for name in ("weekly-digests",):
        with contextlib.suppress(KeyError):
            LAST_ENQUEUED.remove(name)
    yield


def test_the_last_fire_gauge_is_filled_from_the_record_at_start_up_and_on_taking_the_lead(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    empty_gauge: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(brokers.client, "_default", Client(topology, signing_key=b"test-signing-key"))
    # Given a scheduler (another process: its gauge is not ours) that fired the weekly digests
    # through RabbitMQ
    other = scheduler(engine, send_to_rabbitmq, DIGESTS, holder="a")
    other.start(now=at("2026-11-20T12:00"))
    other.tick(at("2026-11-22T03:00:05"))
    assert gauge("weekly-digests") is None
    # When this process starts (a restart: nothing fired here yet)
    standby = scheduler(engine, send_to_rabbitmq, DIGESTS, holder="b", on_last_enqueued=report_last_enqueued)
    standby.start(now=at("2026-11-22T03:00:06"))
    # Then the gauge says when the recorded fire was enqueued, without waiting a week for the next
    [first] = enqueued_at(engine, "weekly-digests")
    assert gauge("weekly-digests") == first
    # When the other fires again, then dies, and this one takes the lead
    other.tick(at("2026-11-29T03:00:05"))
    assert standby.tick(at("2026-11-29T03:00:06")) == []  # the other still holds the lease
    standby.tick(at("2026-11-29T03:00:30"))
    # Then the gauge has the other's latest fire
    assert standby.leading
    [_, second] = enqueued_at(engine, "weekly-digests")
    assert second != first and gauge("weekly-digests") == second
    # And the two fires are the two messages in RabbitMQ
    assert depth(topology, "notifications") == 2


class Clock:
    """The scheduler's clock, and its RabbitMQ reached through the real client: down (a port nobody
    listens on, so each send is a refused connection) or up (the test's vhost). Each attempt is
    recorded; ``publish_seconds`` is how long a confirm takes on the scheduler's timer."""

    def __init__(self, url: str) -> None:
        self.now = datetime(2026, 11, 1, tzinfo=UTC)
        self.monotonic = 0.0
        self.attempts: list[tuple[str, datetime]] = []
        self.failing = True
        self.publish_seconds = 0.0
        self.up = Client(url, signing_key=b"test-signing-key")
        self.down = Client(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", signing_key=b"test-signing-key")

    def send(self, actor: str, payload: dict[str, Any], priority: str | None, key: str, schedule: str) -> str:
        self.attempts.append((schedule, self.now))
        self.monotonic += self.publish_seconds
        brokers.client._default = self.down if self.failing else self.up
        return send_to_rabbitmq(actor, payload, priority, key, schedule)


@pytest.fixture
def clock(topology: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:  # noqa: F811
    monkeypatch.setattr(brokers.client, "_default", None)  # restored afterwards
    clock = Clock(topology)
    yield clock
    clock.up.close()
    clock.down.close()


def test_a_failed_fire_is_retried_with_backoff_only_within_its_grace_then_given_up(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    clock: Clock,
) -> None:
    # Given an hourly schedule that drops fires more than 5 minutes late, and RabbitMQ down at 01:00
    s = scheduler(engine, clock.send, SKIPPY)
    s.start(now=at("2026-11-01T00:30", UTC_ZONE))
    # When the scheduler ticks every second for seven minutes, RabbitMQ coming back at 01:06
    clock.now = at("2026-11-01T01:00:01", UTC_ZONE)
    while clock.now < at("2026-11-01T01:07", UTC_ZONE):
        clock.failing = clock.now < at("2026-11-01T01:06", UTC_ZONE)
        s.tick(clock.now)
        clock.now += timedelta(seconds=1)
    # Then it tried again after 2, 4, 8, 16, 32 then every 60 seconds, and not after the 300 s grace
    assert [t.strftime("%H:%M:%S") for _, t in clock.attempts] == [
        "01:00:01",
        "01:00:03",
        "01:00:07",
        "01:00:15",
        "01:00:31",
        "01:01:03",
        "01:02:03",
        "01:03:03",
        "01:04:03",
    ]
    # And the fire is recorded as given up, with the last error, not sent 20 hours late
    assert fires(engine) == [("hourly-skip", "2026-11-01T01:00:00+00:00", "skipped")]
    with Session(engine) as session:
        note = session.scalars(select(ScheduleFire.note)).one()
    assert note is not None and "given up" in note and "could not publish to RabbitMQ" in note
    assert depth(topology, "notifications") == 0


def test_a_tick_stops_publishing_after_its_time_and_leaves_the_rest_for_the_next(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    clock: Clock,
) -> None:
    # Given six schedules due at 02:00 and a RabbitMQ that takes 2 s to confirm each message
    clock.failing, clock.publish_seconds = False, 2.0
    crontab = tuple(
        Schedule(f"nightly-{n}", "notifications.send_weekly_digests", "0 2 * * *", timezone="UTC")
        for n in range(6)
    )
    # Publishing time: a third of the lease, 5 s
    s = scheduler(engine, clock.send, *crontab, lease_seconds=15, timer=lambda: clock.monotonic)
    s.start(now=at("2026-11-01T01:00", UTC_ZONE))
    # When it ticks at 02:00:00 and again a second later
    first = s.tick(at("2026-11-01T02:00:00", UTC_ZONE))
    second = s.tick(at("2026-11-01T02:00:01", UTC_ZONE))
    # Then the first tick sent three (6 s, past its 5 s) and the second the other three, each once,
    # every one for its 02:00 fire time
    assert [f.status for f in first] == ["enqueued"] * 3
    assert [f.status for f in second] == ["enqueued"] * 3
    assert sorted(name for name, _ in clock.attempts) == [f"nightly-{n}" for n in range(6)]
    assert {f.fire_time for f in first + second} == {at("2026-11-01T02:00", UTC_ZONE)}
    assert s.tick(at("2026-11-01T02:00:02", UTC_ZONE)) == []
    assert depth(topology, "notifications") == 6


class Crash(BaseException):
    """The scheduler process dying (SIGKILL, OOM) after it claimed a fire and before it sent it."""


def test_a_scheduler_dying_between_claim_and_send_is_recovered_by_one_resend(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(brokers.client, "_default", Client(topology, signing_key=b"test-signing-key"))

    def dies(actor: str, payload: dict[str, Any], priority: str | None, key: str, schedule: str) -> str:
        raise Crash

    # Given a leader that claims the 01:00 fire, then dies before sending it
    crashed = scheduler(engine, dies, SKIPPY, holder="a")
    crashed.start(now=at("2026-11-01T00:30", UTC_ZONE))
    with pytest.raises(Crash):
        crashed.tick(at("2026-11-01T01:00:01", UTC_ZONE))
    assert fires(engine) == [("hourly-skip", "2026-11-01T01:00:00+00:00", "claimed")]
    # When a standby with the real RabbitMQ takes the lead once the lease expires
    standby = scheduler(engine, send_to_rabbitmq, SKIPPY, holder="b")
    standby.start(now=at("2026-11-01T01:00:20", UTC_ZONE))
    took_over = standby.tick(at("2026-11-01T01:00:30", UTC_ZONE))
    # Then it leaves the fire alone while the claim may still be in flight (60 s)
    assert [f.status for f in took_over] == ["duplicate"] and depth(topology, "notifications") == 0
    # And sends it once the claim is stale, and never again
    [resent] = standby.tick(at("2026-11-01T01:01:05", UTC_ZONE))
    for seconds in (10, 60, 120):
        assert standby.tick(at("2026-11-01T01:01:05", UTC_ZONE) + timedelta(seconds=seconds)) == []
    assert resent.status == "enqueued"
    [message] = take(topology, "notifications", 1)
    assert depth(topology, "notifications") == 0
    key = fire_key("hourly-skip", at("2026-11-01T01:00", UTC_ZONE))
    assert message.message()["message_id"] == resent.message_id
    assert resent.message_id == message_id_for("notifications.send_weekly_digests", key)
    assert message.message()["options"]["idempotency_key"] == key
    with Session(engine) as session:
        row = session.scalars(select(ScheduleFire)).one()
    assert (row.status, row.message_id, row.claimed_by) == ("enqueued", resent.message_id, "a")


def test_a_stored_run_time_schedule_whose_actor_is_gone_is_paused_at_start_up(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(brokers.client, "_default", Client(topology, signing_key=b"test-signing-key"))
    # Given a run-time schedule stored by an earlier release whose actor has since been removed,
    # with a fire that failed back then
    now = at("2026-11-20T10:00")
    add_schedule(
        engine,
        "old-digest",
        "notifications.send_weekly_digests",
        {},
        cron="0 7 * * *",
        timezone="UTC",
        now=now,
    )
    store = job_store(engine)
    job = store.lookup_job(dynamic_job_id("old-digest"))
    job._modify(kwargs={**job.kwargs, "actor": "notifications.send_old_digest"})
    store.update_job(job)
    with Session(engine) as session, session.begin():
        session.add(
            ScheduleFire(
                schedule="old-digest",
                fire_time=at("2026-11-20T07:00", UTC_ZONE),
                status="failed",
                actor_name="notifications.send_old_digest",
                claimed_by="earlier",
                claimed_at=at("2026-11-20T07:00", UTC_ZONE),
                note="ConnectionError: RabbitMQ is down",
            )
        )
    # When the scheduler starts and ticks through the schedule's next fire time
    s = scheduler(engine, send_to_rabbitmq)
    with caplog.at_level(logging.ERROR, logger="schedules.scheduler"):
        s.start(now=now)
    for minutes in range(0, 24 * 60, 30):
        s.tick(now + timedelta(minutes=minutes))
    # Then start-up said so as an error, naming the schedule and the actor
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "old-digest is paused" in logged.getMessage()
    assert "unknown actor 'notifications.send_old_digest'" in logged.getMessage()
    # And nothing was sent or retried: no message in any queue of RabbitMQ; the failed fire is
    # recorded as skipped, the schedule listed without next runs
    assert {queue: depth(topology, queue) for queue in DOMAIN_QUEUES} == dict.fromkeys(DOMAIN_QUEUES, 0)
    assert fires(engine) == [("old-digest", "2026-11-20T07:00:00+00:00", "skipped")]
    [row] = list_schedules(engine, (), "UTC", now=now)
    assert row["name"] == "old-digest" and row["next"] == []
