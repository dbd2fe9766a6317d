"""End to end: an SMS sent by a service reaches a `dramatiq actors` worker and the fake Twilio once;
a number Twilio refuses ends in the dead-letter queue with the reason, after one attempt."""

from __future__ import annotations

import time
from collections.abc import Iterator

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
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(User(id=1, phone="+15551230001", name="Ada Lovelace", role="student"))
        session.add(User(id=2, phone="+1555", name="Bad Number", role="student"))
        session.add(User(id=3, phone=None, name="No Phone", role="student"))
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
