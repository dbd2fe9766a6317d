"""End to end: an SMS sent by a service reaches a `dramatiq actors` worker and the fake Twilio once;
a number Twilio refuses ends in the dead-letter queue with the reason, after one attempt; during the
user's quiet hours the SMS is parked in RabbitMQ until they end, unless it is critical."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import Delivery, User
from tests.amqp import depth, take
from tests.fakes import twilio
from tests.fakes.twilio import FakeTwilio
from tests.worker import wait_until


@pytest.fixture
def edujobs_env(shared_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database and fakes."""
    return shared_env


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    no_quiet_hours = {"quiet_hours_start": clock_time(0, 0), "quiet_hours_end": clock_time(0, 0)}
    now = datetime.now(UTC)
    quiet_now = {  # a quiet period (the user's zone is UTC) that contains the present, ends in 2 h
        "quiet_hours_start": (now - timedelta(hours=1)).time().replace(microsecond=0),
        "quiet_hours_end": (now + timedelta(hours=2)).time().replace(microsecond=0),
    }
    with Session(engine) as session:
        session.add(User(id=1, phone="+15551230001", name="Ada Lovelace", role="student", **no_quiet_hours))
        session.add(User(id=2, phone="+1555", name="Bad Number", role="student", **no_quiet_hours))
        session.add(User(id=3, phone=None, name="No Phone", role="student", **no_quiet_hours))
        session.add(User(id=4, phone="+15551230004", name="Night Owl", role="student", **quiet_now))
        session.commit()
    yield engine
    engine.dispose()


def sms_deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.scalars(select(Delivery).where(Delivery.channel == "sms")))


def test_an_sms_sent_twice_with_one_key_reaches_twilio_once(
    worker_client: Client, fake_twilio: FakeTwilio, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    # Given a worker and a user with a phone number
    payload = {
        "user_id": 1,
        "template": "report_ready",
        "context": {"report_name": "Q1 grades", "report_format": "pdf", "download_url": "https://x.test/r/1"},
    }
    # When a service sends the SMS, then sends it again with the same idempotency key
    message_id = worker_client.send("notifications.send_sms", payload, idempotency_key="report-ready:1:sms")
    fake_twilio.wait_for(1)
    wait_until(lambda: [d.status for d in sms_deliveries(engine)] == ["sent"])
    worker_client.send("notifications.send_sms", payload, idempotency_key="report-ready:1:sms")
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.0)
    # Then Twilio received one SMS, with the rendered text, the sender and the status callback
    assert fake_twilio.messages() == [
        {
            "To": "+15551230001",
            "From": twilio.FROM_NUMBER,
            "Body": 'Ada Lovelace, your report "Q1 grades" (PDF) is ready: https://x.test/r/1',
            "StatusCallback": "https://school.example.edu/hooks/twilio",
        }
    ]
    # And the ledger holds one SMS delivery, with Twilio's SID
    [delivery] = sms_deliveries(engine)
    assert delivery.message_id == message_id and delivery.user_id == 1
    assert delivery.provider_message_id and delivery.provider_message_id.startswith("SM")


def test_a_number_twilio_refuses_is_dead_lettered_at_once(
    worker_client: Client, fake_twilio: FakeTwilio, edujobs_env: dict[str, str]
) -> None:
    # Given Twilio refuses the number as invalid
    fake_twilio.queue(twilio.invalid_number("+1555"))
    # When SMS are sent to that user and to a user without a phone
    worker_client.send("notifications.send_sms", {"user_id": 2, "template": "welcome"})
    worker_client.send("notifications.send_sms", {"user_id": 3, "template": "welcome"})
    # Then both are dead-lettered after one attempt each, with the reason an operator needs
    dead = take(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ", 2)
    errors = sorted(d.headers["x-edujobs-error"] for d in dead)
    assert any("not a valid phone number" in e for e in errors), errors
    assert any("user 3 has no phone number" in e for e in errors), errors
    assert {d.headers["x-edujobs-exception"] for d in dead} == {"RecipientError"}
    assert len(fake_twilio.requests) == 1


def test_a_direct_sms_waits_out_quiet_hours_in_rabbitmq_but_a_critical_one_does_not(
    worker_client: Client, fake_twilio: FakeTwilio, edujobs_env: dict[str, str]
) -> None:
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    payload = {"user_id": 4, "template": "emergency_alert", "context": {"title": "Closed", "body": "Snow."}}
    # When a normal SMS is sent to a user whose quiet hours are now
    worker_client.send("notifications.send_sms", payload, idempotency_key="closed:4:sms")
    # Then nothing reaches Twilio: the same SMS (same key) is parked until the period ends
    wait_until(lambda: depth(url, "notifications.park") == 1, what="a message parked in notifications.park")
    [parked] = take(url, "notifications.park", 1)
    message = parked.message()
    assert message["actor_name"] == "notifications.send_sms"
    assert message["kwargs"]["idempotency_key"] == "closed:4:sms"
    assert 2 * 3600 - 120 < message["options"]["eta"] / 1000 - time.time() < 2 * 3600 + 120
    assert fake_twilio.requests == []
    # When the same SMS is sent as critical, it goes out at once
    worker_client.send(
        "notifications.send_sms", payload, idempotency_key="closed:4:critical", priority="critical"
    )
    fake_twilio.wait_for(1)
    assert [m["To"] for m in fake_twilio.messages()] == ["+15551230004"]
