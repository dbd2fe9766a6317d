"""End to end: domain events published by another process run every handler bound to them once,
each with its own retries and dead letters; forged events never run; unrouted events are kept.

One worker (``tests.e2e.actors_events``: the real actors and handlers, plus two test handlers of
``user.created``, one recording and one always failing) serves the whole module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import contracts.events
from brokers.client import Client, build_event
from contracts.events import EVENTS_EXCHANGE, UNROUTED_QUEUE, EventContract, register_event
from store.db import make_engine
from store.migrate import upgrade
from store.models import Delivery, Iep, User
from tests.amqp import Received, depth, publish, take
from tests.e2e.conftest import recorded
from tests.fakes.sendgrid import FakeSendGrid
from tests.services import postgres_database, rabbitmq_vhost, services_environment
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
ADA, COORDINATOR, STUDENT = 1, 2, 3


class NobodyListens(EventContract):
    """An event no handler is bound to (registered in this test process only, by the test that
    publishes it: registered at import, it would be in every test's registry of events)."""

    user_id: int


@pytest.fixture
def nobody_listens() -> Iterator[str]:
    register_event("testing.nobody_listens")(NobodyListens)
    try:
        yield "testing.nobody_listens"
    finally:
        contracts.events._EVENTS.pop("testing.nobody_listens", None)


class Setup:
    def __init__(self, env: dict[str, str], engine: Engine, sendgrid: FakeSendGrid, client: Client) -> None:
        self.env, self.engine, self.sendgrid, self.client = env, engine, sendgrid, client
        self.url = env["EDUJOBS_RABBITMQ_URL"]
        self.key = env["EDUJOBS_TEST_KEY"]

    def mails_to(self, address: str) -> list[dict[str, Any]]:
        return [m for m in self.sendgrid.mails() if m["personalizations"][0]["to"][0]["email"] == address]

    def deliveries(self, actor_name: str) -> list[Delivery]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Delivery).where(Delivery.actor_name == actor_name)))


def dead_letters_of(url: str, queue: str, event_ids: set[str], count: int) -> list[Received]:
    """Take dead letters from ``queue`` until ``count`` of them are of ``event_ids`` (the module's
    other tests leave theirs there too)."""
    found: list[Received] = []
    while len(found) < count:
        letter = take(url, queue, 1)[0]
        if letter.message()["options"].get("event_id") in event_ids:
            found.append(letter)
    return found


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    sendgrid = FakeSendGrid().start()
    key = f"edujobs-test:{uuid.uuid4().hex}"
    with rabbitmq_vhost() as url, postgres_database() as database:
        upgrade(database)
        engine = make_engine(database)
        no_quiet_hours = {"quiet_hours_start": time(0, 0), "quiet_hours_end": time(0, 0)}
        with Session(engine) as session:
            session.add_all(
                [
                    User(id=ADA, email="ada@example.edu", name="Ada Lovelace", role="student"),
                    User(
                        id=COORDINATOR,
                        email="grace@example.edu",
                        name="Grace Hopper",
                        role="instructor",
                        channel_order=["email"],
                        **no_quiet_hours,
                    ),
                    User(id=STUDENT, email="alan@example.edu", name="Alan Turing", role="student"),
                ]
            )
            session.flush()
            session.add(
                Iep(
                    id=40,
                    user_id=STUDENT,
                    coordinator_id=COORDINATOR,
                    starts_on=date(2026, 12, 1),
                    review_due_on=date(2027, 3, 1),
                )
            )
            session.commit()
        env = {**services_environment(url, database, sendgrid), "EDUJOBS_TEST_KEY": key}
        worker = WorkerProcess(env, threads=2, module="tests.e2e.actors_events").wait_ready()
        client = Client(url, signing_key=KEY)
        try:
            yield Setup(env, engine, sendgrid, client)
        finally:
            client.close()
            worker.stop()
            engine.dispose()
            sendgrid.stop()
            redis.Redis().delete(key)


def test_a_new_user_gets_one_welcome_email_even_when_the_event_is_published_twice(setup: Setup) -> None:
    # Given a worker whose handlers of user.created are the welcome email and two test handlers
    # When another service publishes user.created for Ada twice, with the same event id
    event_id = setup.client.publish_event("user.created", {"user_id": ADA})
    assert setup.client.publish_event("user.created", {"user_id": ADA}, event_id=event_id) == event_id
    # Then each delivery runs the recording handler (both deliveries were processed)...
    wait_until(
        lambda: recorded(setup.key).count(f"record:user.created:{event_id}:{ADA}") == 2,
        what="the recording handler ran for both publications",
    )
    wait_until(
        lambda: setup.deliveries("notifications.on_user_created"), what="the welcome email's ledger row"
    )
    # ...and Ada got exactly one welcome email, recorded once in the ledger
    wait_until(lambda: len(setup.mails_to("ada@example.edu")) >= 1, what="the welcome email at SendGrid")
    mails = setup.mails_to("ada@example.edu")
    assert len(mails) == 1
    assert "Welcome" in mails[0]["subject"]
    deliveries = setup.deliveries("notifications.on_user_created")
    assert [(d.channel, d.status, d.idempotency_key) for d in deliveries] == [
        ("email", "sent", f"notifications.on_user_created:{event_id}")
    ]


def test_a_failing_handler_retries_and_dies_alone(setup: Setup) -> None:
    # Given three handlers of user.created, one of which always fails (one retry)
    # When one user.created is published
    event_id = setup.client.publish_event("user.created", {"user_id": ADA})
    # Then the failing handler is tried twice, then dead-lettered in its own .XQ with the reason...
    dead = dead_letters_of(setup.url, "testing.on_user_created_failing.XQ", {event_id}, 1)
    assert dead[0].headers["x-edujobs-reason"] == "retries_exhausted"
    body = dead[0].message()
    assert body["actor_name"] == "testing.on_user_created_failing"
    assert body["options"]["event_id"] == event_id
    assert recorded(setup.key).count(f"fail:{event_id}") == 2
    # ...while the other handlers ran once each, untouched by its retries
    assert recorded(setup.key).count(f"record:user.created:{event_id}:{ADA}") == 1
    wait_until(
        lambda: any(
            d.idempotency_key.endswith(event_id) for d in setup.deliveries("notifications.on_user_created")
        ),
        what="the welcome email of this event",
    )
    for queue in ("testing.on_user_created.XQ", "notifications.on_user_created.XQ"):
        assert depth(setup.url, queue) == 0


def test_the_coordinator_of_a_new_iep_is_told_once(setup: Setup) -> None:
    # Given an IEP of Alan's coordinated by Grace, who reads email and has no quiet hours
    # When iep.created is published twice with one event id (naming no coordinator: the IEP does)
    event_id = str(uuid.uuid4())
    occurred = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for _ in range(2):
        setup.client.publish_event(
            "iep.created", {"iep_id": 40, "user_id": STUDENT}, event_id=event_id, occurred_at=occurred
        )
    # Then Grace gets one email about Alan's new IEP, through notify_user, recorded once
    wait_until(lambda: setup.mails_to("grace@example.edu"), what="the coordinator's email at SendGrid")
    wait_until(
        lambda: setup.deliveries("notifications.notify_user") or setup.deliveries("notifications.send_email"),
        what="the ledger row of the coordinator's email",
    )
    mails = setup.mails_to("grace@example.edu")
    assert len(mails) == 1
    assert mails[0]["subject"] == "New IEP: Alan Turing"
    assert depth(setup.url, "notifications.on_iep_created.XQ") == 0
    rows = setup.deliveries("notifications.notify_user") + setup.deliveries("notifications.send_email")
    assert [(d.user_id, d.status, d.idempotency_key) for d in rows] == [
        (COORDINATOR, "sent", f"notifications.on_iep_created:{event_id}:email")
    ]


def test_a_forged_event_is_dead_lettered_with_its_reason_and_never_runs(setup: Setup) -> None:
    # Given events published straight to RabbitMQ: one signed with another key, one altered after
    # signing (Ada's event made into the coordinator's), one unsigned
    other_id, other_key = build_event("user.created", {"user_id": ADA}, signing_key=b"not-the-key")
    signed_id, signed = build_event("user.created", {"user_id": ADA}, signing_key=KEY)
    tampered = orjson.loads(signed)
    tampered["kwargs"]["user_id"] = COORDINATOR
    unsigned = orjson.loads(signed)
    del unsigned["options"]["signature"]
    sent_before = len(setup.sendgrid.mails())
    for body in (other_key, orjson.dumps(tampered), orjson.dumps(unsigned)):
        publish(setup.url, "user.created", body, exchange=EVENTS_EXCHANGE)
    # Then each handler's queue dead-letters all three, with the reason, and runs none
    forged = {other_id, signed_id}
    for handler in (
        "notifications.on_user_created",
        "testing.on_user_created",
        "testing.on_user_created_failing",
    ):
        letters = dead_letters_of(setup.url, f"{handler}.XQ", forged, 3)
        assert [d.headers["x-edujobs-reason"] for d in letters] == ["bad_signature"] * 3
    assert not [v for v in recorded(setup.key) if other_id in v or signed_id in v]
    assert len(setup.sendgrid.mails()) == sent_before


def test_a_signed_event_on_a_handler_queue_that_is_not_bound_to_it_does_not_run(setup: Setup) -> None:
    # Given a genuine iep.created, published straight into the welcome handler's queue
    _, body = build_event("iep.created", {"iep_id": 40, "user_id": STUDENT}, signing_key=KEY)
    publish(setup.url, "notifications.on_user_created", body)
    # Then it is dead-lettered there (wrong_queue), never run as a user.created
    dead = take(setup.url, "notifications.on_user_created.XQ", 1)
    assert dead[0].headers["x-edujobs-reason"] == "wrong_queue"
    assert dead[0].body == body


def test_an_event_no_handler_is_bound_to_is_kept_in_events_unrouted(
    setup: Setup, nobody_listens: str
) -> None:
    # Given an event no handler queue is bound to
    before = depth(setup.url, UNROUTED_QUEUE)
    # When it is published (confirmed: RabbitMQ routed it through the alternate exchange)
    event_id = setup.client.publish_event(nobody_listens, {"user_id": ADA})
    # Then it waits in events.unrouted, whole, instead of vanishing
    assert depth(setup.url, UNROUTED_QUEUE) == before + 1
    kept = take(setup.url, UNROUTED_QUEUE, before + 1)[-1].message()
    assert kept["message_id"] == event_id
    assert kept["options"]["event"] == "testing.nobody_listens"


def test_a_requeued_dead_handler_run_goes_back_to_that_handler_only(setup: Setup) -> None:
    from contracts.signing import Keyring
    from ops.dlq import DeadLetters, Selection

    failing = "testing.on_user_created_failing"
    dead_letters = DeadLetters(setup.url, queues=(failing,), keyring=Keyring(KEY))

    def letter_of(event_id: str) -> list[str]:
        return [
            letter.id
            for letter in dead_letters.read(failing)
            if (letter.message or {}).get("options", {}).get("event_id") == event_id
        ]

    # Given an event whose failing handler gave up on it (2 attempts), the other handlers done
    event_id = setup.client.publish_event("user.created", {"user_id": ADA})
    wait_until(lambda: letter_of(event_id), what="the failing handler's dead letter")
    assert recorded(setup.key).count(f"fail:{event_id}") == 2
    # When an operator requeues that dead letter
    result = dead_letters.requeue(failing, Selection(ids=frozenset(letter_of(event_id))))
    assert result.count == 1
    # Then it runs again in that handler only (verified: its signature held), and dies again
    wait_until(lambda: recorded(setup.key).count(f"fail:{event_id}") == 4, what="two more attempts")
    wait_until(lambda: letter_of(event_id), what="the dead letter back after its new attempts")
    [again] = [letter for letter in dead_letters.read(failing) if letter.id in letter_of(event_id)]
    assert again.headers["x-edujobs-reason"] == "retries_exhausted"
    assert recorded(setup.key).count(f"record:user.created:{event_id}:{ADA}") == 1
