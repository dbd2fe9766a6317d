"""End to end: a push sent by a service reaches each of the user's devices once through a `dramatiq
actors` worker and the fake FCM; a device FCM calls unregistered is removed from the user."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import time as clock_time

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import Delivery, User
from tests.amqp import depth, take
from tests.fakes import fcm
from tests.fakes.fcm import FakeFcm
from tests.fakes.http import Recorded, Reply, Responder
from tests.worker import wait_until


@pytest.fixture
def edujobs_env(shared_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database and fakes."""
    return shared_env


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    no_quiet_hours = {
        "quiet_hours_start": clock_time(0, 0),
        "quiet_hours_end": clock_time(0, 0),
    }  # any time of day
    with Session(engine) as session:
        session.add(User(id=1, name="Ada Lovelace", role="student", push_tokens=["phone-ada", "old-tablet"],
                         **no_quiet_hours))  # fmt: skip
        session.add(User(id=2, name="Gone", role="student", push_tokens=["uninstalled"], **no_quiet_hours))
        session.commit()
    yield engine
    engine.dispose()


def tokens_of(engine: Engine, user_id: int) -> list[str]:
    with Session(engine) as session:
        user = session.get(User, user_id)
        return list(user.push_tokens) if user else []


def test_a_push_reaches_each_live_device_once_and_dead_tokens_are_removed(
    worker_client: Client, fake_fcm: FakeFcm, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    # Given FCM knows the user's phone but says the old tablet's token is unregistered
    grade = {"course": "Algebra", "assignment": "Quiz 3", "score": 18, "max_score": 20}
    payload = {"user_id": 1, "template": "grade_posted", "context": grade}
    fake_fcm.default = _unregistered_for("old-tablet", fake_fcm.default)
    # When a service sends the push, then the same push again (same idempotency key)
    message_id = worker_client.send("notifications.send_push", payload, idempotency_key="grade:77:push")
    wait_until(lambda: tokens_of(engine, 1) == ["phone-ada"])
    worker_client.send("notifications.send_push", payload, idempotency_key="grade:77:push")
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.0)
    # Then the phone got one notification, rendered, carrying the message id
    delivered = [m for m in fake_fcm.messages() if m["token"] == "phone-ada"]
    assert delivered == [
        {
            "token": "phone-ada",
            "notification": {"title": "New grade in Algebra", "body": "Quiz 3: 18/20"},
            "data": {"message_id": message_id, "template": "grade_posted"},
        }
    ]
    # And the dead token was tried once and removed from the user; the ledger has one push sent
    assert [m["token"] for m in fake_fcm.messages()].count("old-tablet") == 1
    with Session(engine) as session:
        sent = list(
            session.scalars(select(Delivery).where(Delivery.channel == "push", Delivery.status == "sent"))
        )
    assert len(sent) == 1 and (sent[0].provider_message_id or "").startswith("projects/")


def test_a_user_whose_every_device_is_gone_is_dead_lettered(
    worker_client: Client, fake_fcm: FakeFcm, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    fake_fcm.queue(fcm.unregistered())
    worker_client.send("notifications.send_push", {"user_id": 2, "template": "welcome"})
    [dead] = take(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ", 1)
    assert dead.headers["x-edujobs-exception"] == "RecipientError"
    assert "no registered device left (1 token(s) removed)" in dead.headers["x-edujobs-error"]
    assert tokens_of(engine, 2) == []


def _unregistered_for(token: str, default: Responder) -> Responder:
    """FCM's answers, except that ``token`` is unregistered."""

    def reply(request: Recorded) -> Reply:
        if request.json()["message"]["token"] == token:
            return fcm.unregistered()
        return default(request)

    return reply
