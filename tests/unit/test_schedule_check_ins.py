"""``ScheduleCheckIns`` on a StubBroker and a stub worker, against the fake Sentry (the real sentry-sdk):
a retried fire stays in progress until its last attempt, and only fires check in."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import sentry_sdk
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, SkipMessage, TimeLimit

from contracts.errors import TransientError
from middleware.crons import ScheduleCheckIns, check_in_id
from middleware.retries import Retries
from tests.fakes.sentry import FakeSentry
from tests.unit.test_schedule_reporting import sentry  # noqa: F401  (fixture)

FIRE = "schedule:nightly:2026-11-29T02:00:00Z"
MONITOR = {"crontab": "0 3 * * *", "timezone": "Europe/Paris", "checkin_margin": 10}


class Delays(dramatiq.Middleware):
    """Skips, without failing, the messages of actors named ``*_delayed`` (as an open breaker does)."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.actor_name.endswith("_delayed"):
            raise SkipMessage("breaker open")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(
        middleware=[Delays(), TimeLimit(), CurrentMessage(), ScheduleCheckIns(), Retries(min_backoff=10)]
    )
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    yield broker
    worker.stop()
    broker.close()


def fire(actor: dramatiq.Actor[..., None], key: str = FIRE) -> None:
    actor.send_with_options(idempotency_key=key, schedule=key.split(":")[1], schedule_monitor=MONITOR)


def test_a_fire_retried_once_stays_in_progress_until_its_second_attempt_succeeds(
    broker: StubBroker,
    sentry: FakeSentry,  # noqa: F811
) -> None:
    attempts: list[int] = []

    @dramatiq.actor(
        broker=broker, actor_name="testing.flaky", max_retries=1, time_limit=30_000, max_backoff=30_000
    )
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise TransientError("the provider is down")

    # When a fire of it fails once and is retried
    fire(flaky)
    broker.join(flaky.queue_name, fail_fast=False)
    sentry_sdk.flush(timeout=5)
    # Then Sentry saw it start twice and end once, ok, all under the fire's check-in id
    check_ins = sentry.check_ins()
    assert [c["status"] for c in check_ins] == ["in_progress", "in_progress", "ok"]
    assert {c["check_in_id"] for c in check_ins} == {check_in_id(FIRE)}
    assert {c["monitor_slug"] for c in check_ins} == {"edujobs-nightly"}
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "crontab", "value": "0 3 * * *"}
    # (max_runtime: two attempts of 30 s and a backoff of at most 30 s, in whole minutes)
    assert check_ins[0]["monitor_config"]["max_runtime"] == 2


def test_a_delayed_fire_and_a_message_that_is_no_fire_send_nothing(
    broker: StubBroker,
    sentry: FakeSentry,  # noqa: F811
) -> None:
    ran: list[str] = []

    @dramatiq.actor(broker=broker, actor_name="testing.plain", time_limit=60_000)
    def plain() -> None:
        ran.append("plain")

    @dramatiq.actor(broker=broker, actor_name="testing.nightly_delayed", time_limit=60_000)
    def nightly_delayed() -> None:
        ran.append("delayed")

    # Given a message that is not a fire (no schedule), and a fire an open breaker holds back
    plain.send()
    # a key of another schedule's than its schedule option is not taken for a fire either
    plain.send_with_options(idempotency_key=FIRE, schedule="other")
    fire(nightly_delayed)
    broker.join(plain.queue_name, fail_fast=False)
    sentry_sdk.flush(timeout=5)
    # Then only the plain ones ran, and Sentry heard of none
    assert ran == ["plain", "plain"]
    assert sentry.check_ins() == []
