"""End to end: notify_user picks the channel, waits out quiet hours durably (critical alerts do not
wait), and falls back to the next channel when one fails for good or its breaker is open, sending
nothing twice."""

from __future__ import annotations

import time as clock
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from middleware.breaker_storage import BreakerRegistry
from store.db import make_engine
from store.models import Delivery, User
from tests.amqp import depth, take
from tests.fakes import fcm
from tests.fakes.fcm import FakeFcm
from tests.fakes.twilio import FakeTwilio
from tests.services import require, unique
from tests.worker import WorkerProcess, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
ALERT = {"title": "School closed", "body": "Snow: the school is closed today."}


def _now_quiet() -> tuple[time, time]:
    """A quiet period (UTC) that contains the present and ends in two hours."""
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).time().replace(microsecond=0), (
        now + timedelta(hours=2)
    ).time().replace(microsecond=0)


@pytest.fixture(scope="module")
def breaker_namespace() -> str:
    require("Redis", "127.0.0.1", 6379)
    return unique("edujobs-test-notify-breaker")


@pytest.fixture(scope="module")
def shared_worker_env(breaker_namespace: str) -> dict[str, str]:
    # The worker shares its breakers' state through Redis, under this module's namespace (closed
    # again before each test)
    return {"EDUJOBS_REDIS_URL": REDIS_URL, "EDUJOBS_BREAKER_NAMESPACE": breaker_namespace}


@pytest.fixture
def edujobs_env(request: pytest.FixtureRequest, shared_worker_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database, fakes and breakers.
    The fault test starts a worker of its own, on services of its own (the usual ``edujobs_env``)."""
    if request.node.get_closest_marker("faults"):
        env: dict[str, str] = request.getfixturevalue("edujobs_env")
        env.update(shared_worker_env)
        return env
    shared: dict[str, str] = request.getfixturevalue("shared_env")
    return shared


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    start, end = _now_quiet()
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        owl = User(id=1, name="Night Owl", role="student", phone="+15551230001", email="owl@example.edu")
        owl.channel_order, owl.quiet_hours_start, owl.quiet_hours_end = ["sms", "email"], start, end
        both = User(id=2, name="Two Ways", role="student", phone="+15551230002", push_tokens=["stale"])
        both.quiet_hours_start = both.quiet_hours_end = time(0, 0)  # no quiet hours
        session.add_all([owl, both])
        session.commit()
    yield engine
    engine.dispose()


def ledger(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id))
        return [(d.channel, d.status, d.error) for d in rows]


def test_quiet_hours_delay_an_sms_durably_but_not_a_critical_alert(
    worker_client: Client, fake_twilio: FakeTwilio, edujobs_env: dict[str, str]
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    # Given a user whose quiet hours are now and who prefers SMS
    # When a normal notification is sent
    worker_client.send(
        "notifications.notify_user", {"user_id": 1, "template": "emergency_alert", "context": ALERT}
    )
    # Then no SMS goes out: the notification is parked in RabbitMQ until the quiet period ends
    wait_until(lambda: depth(url, "notifications.park") == 1, what="a message parked in notifications.park")
    assert fake_twilio.requests == []
    [parked] = take(url, "notifications.park", 1)
    eta = parked.message()["options"]["eta"] / 1000
    assert 2 * 3600 - 120 < eta - clock.time() < 2 * 3600 + 120
    # When the same alert is sent as critical
    worker_client.send(
        "notifications.notify_user",
        {"user_id": 1, "template": "emergency_alert", "context": ALERT},
        priority="critical",
    )
    # Then it goes out by SMS at once
    fake_twilio.wait_for(1)
    [sms] = fake_twilio.messages()
    assert (
        sms["To"] == "+15551230001"
        and sms["Body"] == "ALERT: School closed. Snow: the school is closed today."
    )


def test_a_channel_that_fails_for_good_falls_back_to_the_next_once(
    worker_client: Client,
    fake_fcm: FakeFcm,
    fake_twilio: FakeTwilio,
    engine: Engine,
    edujobs_env: dict[str, str],
) -> None:
    # Given a user reachable by push then SMS, whose only device token FCM no longer knows
    fake_fcm.queue(fcm.unregistered())
    payload = {"user_id": 2, "template": "emergency_alert", "context": ALERT}
    # When a notification is sent, and then again with the same key (a redelivery)
    worker_client.send("notifications.notify_user", payload, idempotency_key="alert:2")
    fake_twilio.wait_for(1)
    wait_until(lambda: ("sms", "sent", None) in ledger(engine), what="the SMS in the ledger")
    worker_client.send("notifications.notify_user", payload, idempotency_key="alert:2")
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    clock.sleep(1.0)
    # Then the SMS went out once, and the ledger says why push was not used: the device's token
    # was refused, which left the user without a device
    assert len(fake_twilio.requests) == 1 and len(fake_fcm.requests) == 1
    device, push, sms = ledger(engine)
    assert device[:2] == ("push_device", "failed") and "FCM refused the device token" in (device[2] or "")
    assert push[:2] == ("push", "skipped") and "no registered device left" in (push[2] or "")
    assert sms == ("sms", "sent", None)


def test_an_open_breaker_sends_the_notification_to_the_next_channel(
    worker_client: Client, fake_fcm: FakeFcm, fake_twilio: FakeTwilio, engine: Engine, breaker_namespace: str
) -> None:
    # Given FCM's breaker is open for every worker (its state is in Redis)
    with Session(engine) as session:
        session.get(User, 2).push_tokens = ["live-device"]  # type: ignore[union-attr]
        session.commit()
    breakers = BreakerRegistry(
        redis_url=REDIS_URL, namespace=breaker_namespace, fail_max=1, reset_timeout=600
    )
    with pytest.raises(RuntimeError), breakers.guard("fcm"):
        raise RuntimeError("not counted")  # a bug of ours counts neither way
    breakers.get("fcm").on_failure(ConnectionError("FCM down"))
    assert breakers.is_open("fcm")
    # When a notification is sent to a user who prefers push
    worker_client.send(
        "notifications.notify_user", {"user_id": 2, "template": "emergency_alert", "context": ALERT}
    )
    # Then it arrives by SMS, and FCM was never called
    fake_twilio.wait_for(1)
    assert fake_fcm.requests == []
    wait_until(lambda: [c for c, s, _ in ledger(engine) if s == "sent"] == ["sms"], what="SMS sent")


@pytest.mark.faults
def test_an_fcm_outage_opens_the_breaker_sms_delivers_and_after_recovery_nothing_went_twice(
    edujobs_env: dict[str, str], fake_fcm: FakeFcm, fake_twilio: FakeTwilio, engine: Engine
) -> None:
    # Given a worker whose FCM breaker opens after 2 failures and lets a trial through after 10 s
    with Session(engine) as session:
        session.get(User, 2).push_tokens = ["live-device"]  # type: ignore[union-attr]
        session.commit()
    env = {**edujobs_env, "EDUJOBS_BREAKER_FAIL_MAX": "2", "EDUJOBS_BREAKER_RESET_TIMEOUT": "10"}
    worker = WorkerProcess(env, threads=2).wait_ready()
    client = Client(env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")

    def alert(n: int) -> None:
        client.send(
            "notifications.notify_user",
            {"user_id": 2, "template": "emergency_alert", "context": {**ALERT, "title": f"Alert {n}"}},
            idempotency_key=f"outage:{n}",
        )

    try:
        # When FCM fails (503) the two notifications sent to a user who prefers push
        fake_fcm.queue(fcm.unavailable(), fcm.unavailable())
        alert(1)
        alert(2)
        fake_fcm.wait_for(2)
        clock.sleep(0.5)
        # Then the breaker is open: the next notification goes by SMS at once, FCM is not called
        alert(3)
        fake_twilio.wait_for(1, timeout=8)
        assert len(fake_fcm.requests) == 2
        # And once FCM is back, the two failed ones are retried after their backoff, through a trial
        # call that closes the breaker, and go by push
        fake_fcm.wait_for(4, timeout=90)
        wait_until(
            lambda: (
                sorted(c for c, s, _ in ledger(engine) if s == "sent" and c != "push_device")
                == ["push", "push", "sms"]
            ),
            what="two pushes and an SMS in the ledger",
        )
        # And a redelivery of each (same idempotency keys) sends nothing more
        for n in (1, 2, 3):
            alert(n)
        wait_until(lambda: depth(env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
        clock.sleep(2)
        assert len(fake_fcm.requests) == 4 and len(fake_twilio.requests) == 1
        pushed = sorted(str(r.json()["message"]["notification"]["title"]) for r in fake_fcm.requests[2:])
        assert pushed == ["Alert 1", "Alert 2"]
        assert fake_twilio.messages()[0]["Body"].startswith("ALERT: Alert 3.")
    finally:
        client.close()
        worker.stop()
