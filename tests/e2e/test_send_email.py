"""End to end: a message sent by the client reaches a `dramatiq actors` worker and the fake SendGrid."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import Delivery, User
from tests.e2e.conftest import SharedServices
from tests.fakes.http import Reply
from tests.fakes.sendgrid import FakeSendGrid


@pytest.fixture
def edujobs_env(shared_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database and fakes."""
    return shared_env


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(User(id=1, email="ada@example.edu", name="Ada Lovelace", role="student"))
        session.add(User(id=2, email=None, name="No Mail", role="student"))
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def client(shared_services: SharedServices, engine: Engine) -> Client:
    """A producer, with the module's worker running once ``engine`` has written the users."""
    return shared_services.client


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.scalars(select(Delivery)))


def wait_until(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_an_email_sent_by_a_service_arrives_at_sendgrid(
    client: Client, fake_sendgrid: FakeSendGrid, engine: Engine
) -> None:
    # Given a worker running and a user with an email address
    # When a service sends notifications.send_email through the client
    message_id = client.send(
        "notifications.send_email",
        {"user_id": 1, "template": "welcome", "context": {"platform_name": "SkillCore"}},
    )
    # Then SendGrid receives one email for that user, rendered from the template
    [mail] = [r.json() for r in fake_sendgrid.wait_for(1)]
    assert mail["personalizations"] == [{"to": [{"email": "ada@example.edu", "name": "Ada Lovelace"}]}]
    assert mail["from"]["email"] == "school@example.edu"
    assert mail["subject"] == "Welcome to SkillCore, Ada Lovelace!"
    text = next(c["value"] for c in mail["content"] if c["type"] == "text/plain")
    html = next(c["value"] for c in mail["content"] if c["type"] == "text/html")
    assert "Hello Ada Lovelace," in text and "<h1>Hello Ada Lovelace,</h1>" in html
    assert mail["custom_args"]["message_id"] == message_id
    assert mail["categories"] == ["welcome"]
    # And the ledger records the delivery with SendGrid's message id
    wait_until(lambda: any(d.status == "sent" for d in deliveries(engine)))
    [delivery] = deliveries(engine)
    assert delivery.channel == "email" and delivery.message_id == message_id
    assert delivery.provider_message_id and delivery.provider_message_id.startswith("fake-sg-")


def test_the_same_message_delivered_twice_sends_one_email(
    client: Client, fake_sendgrid: FakeSendGrid, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    # Given an email that was delivered
    client.send(
        "notifications.send_email", {"user_id": 1, "template": "welcome"}, idempotency_key="welcome:1"
    )
    fake_sendgrid.wait_for(1)
    wait_until(lambda: any(d.status == "sent" for d in deliveries(engine)))
    # When the very same message is delivered again (a redelivery after a lost ack, or a resend)
    client.send(
        "notifications.send_email", {"user_id": 1, "template": "welcome"}, idempotency_key="welcome:1"
    )
    # Then the worker processes it (the queue drains) but SendGrid receives nothing more
    wait_until(lambda: queue_depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.0)
    assert len(fake_sendgrid.requests) == 1
    assert len(deliveries(engine)) == 1


def test_a_rate_limited_email_is_retried_after_retry_after(
    client: Client, fake_sendgrid: FakeSendGrid, engine: Engine
) -> None:
    # Given SendGrid answers the first request with 429 and Retry-After: 1
    fake_sendgrid.queue(Reply(429, {"errors": [{"message": "slow down"}]}, {"Retry-After": "1"}))
    # When an email is sent
    client.send("notifications.send_email", {"user_id": 1, "template": "welcome"})
    # Then it is retried and delivered once
    requests = fake_sendgrid.wait_for(2, timeout=60)
    assert len(requests) == 2
    wait_until(lambda: any(d.status == "sent" for d in deliveries(engine)))


def queue_depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return int(channel.queue_declare(queue=queue, passive=True).method.message_count)
    finally:
        connection.close()
