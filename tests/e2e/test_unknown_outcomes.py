"""End to end, findings 11 and 13: a `dramatiq actors` worker never silently sends twice what a
provider may already have, whether the provider hung up after receiving it or the worker was
killed while the provider held it; and what it holds back is on record for operators.

Each test checks what a user would: the requests that reached the fake provider, the ledger row,
and the job's end (the message finished: no retry left to send it again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import time as clock_time

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.jobs import JobStore
from store.models import Delivery, User
from tests.fakes.http import FakeServer, Reply, gateway_error, hang_up, reset
from tests.fakes.sendgrid import FakeSendGrid
from tests.worker import WorkerProcess, wait_until

OWNER_TIMEOUT = "3"

pytestmark = pytest.mark.faults


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    always = {"quiet_hours_start": clock_time(0, 0), "quiet_hours_end": clock_time(0, 0)}
    with Session(engine) as session:
        session.add(User(id=1, name="Ada Lovelace", role="student", email="ada@example.edu",
                         phone="+15551230001", push_tokens=["phone-ada"], **always))  # fmt: skip
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def env(edujobs_env: dict[str, str]) -> dict[str, str]:
    return {**edujobs_env, "EDUJOBS_LEDGER_OWNER_TIMEOUT_SECONDS": OWNER_TIMEOUT}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Client]:
    producer = Client(env["EDUJOBS_RABBITMQ_URL"], signing_key=b"test-signing-key")
    yield producer
    producer.close()


def delivery(engine: Engine, channel: str) -> Delivery | None:
    with Session(engine) as session:
        return session.scalars(select(Delivery).where(Delivery.channel == channel)).one_or_none()


def finished(engine: Engine, message_id: str) -> dict[str, object] | None:
    job = JobStore(engine).get(message_id)
    return job.result_summary if job is not None and job.state == "succeeded" else None


CHANNELS: dict[str, tuple[str, str, Callable[[], Reply]]] = {
    # channel: (actor, fake fixture, how the provider fails after receiving the request)
    "email": ("notifications.send_email", "fake_sendgrid", hang_up),
    "sms": ("notifications.send_sms", "fake_twilio", reset),
    "push_device": ("notifications.send_push", "fake_fcm", lambda: gateway_error(504)),
}


@pytest.mark.parametrize("channel", list(CHANNELS))
def test_a_provider_that_received_the_message_but_did_not_answer_gets_it_once(
    channel: str, env: dict[str, str], engine: Engine, client: Client, request: pytest.FixtureRequest
) -> None:
    actor, fixture, fault = CHANNELS[channel]
    provider: FakeServer = request.getfixturevalue(fixture)
    # Given a provider that accepts the next request and then fails to answer it (hang-up, reset, 504)
    provider.queue(fault())
    worker = WorkerProcess(env, threads=2).wait_ready()
    try:
        # When a normal-priority notification is sent
        message_id = client.send(actor, {"user_id": 1, "template": "welcome"}, idempotency_key="welcome:1")
        # Then the job ends without a retry, its outcome unknown
        wait_until(lambda: finished(engine, message_id) is not None, timeout=60, what="the job finished")
        assert finished(engine, message_id) == {"status": "unknown", "provider_message_id": None}
        # And the provider has it once: nothing was sent again
        assert len(provider.requests) == 1
        # And the ledger says so, with why, for an operator
        row = delivery(engine, channel)
        assert row is not None and row.status == "unknown" and row.error and "unknown outcome" in row.error
    finally:
        worker.stop()


def killed_mid_send(env: dict[str, str], sendgrid: FakeSendGrid, client: Client, priority: str) -> str:
    """Send an email; kill the worker (SIGKILL) while SendGrid holds the request; start another."""
    sendgrid.queue(Reply(202, None, {"X-Message-Id": "late"}, delay=8))
    worker = WorkerProcess(env, threads=2).wait_ready()
    message_id = client.send("notifications.send_email", {"user_id": 1, "template": "welcome"},
                             priority=priority, idempotency_key="welcome:1")  # fmt: skip
    sendgrid.wait_for(1)
    worker.kill()
    return message_id


@pytest.fixture
def second_worker(env: dict[str, str]) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess(env, threads=2).wait_ready())
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def test_a_worker_killed_while_sendgrid_held_the_email_does_not_send_it_again(
    env: dict[str, str], engine: Engine, client: Client, fake_sendgrid: FakeSendGrid,
    second_worker: Callable[[], WorkerProcess],
) -> None:  # fmt: skip
    # Given a worker killed outright while SendGrid held its email (the email may have gone out)
    message_id = killed_mid_send(env, fake_sendgrid, client, "normal")
    # When another worker takes the redelivered message
    second_worker()
    # Then within seconds (the dead worker's heartbeat is overdue), not a 10-minute lease, the job
    # ends as an unknown outcome, held: SendGrid got the email once
    wait_until(lambda: finished(engine, message_id) is not None, timeout=60, what="the job finished")
    assert finished(engine, message_id) == {"status": "unknown", "provider_message_id": None}
    assert len(fake_sendgrid.requests) == 1
    row = delivery(engine, "email")
    assert row is not None and row.status == "unknown" and "worker stopped" in (row.error or "")


def test_a_critical_email_whose_worker_was_killed_mid_send_is_sent_again(
    env: dict[str, str], engine: Engine, client: Client, fake_sendgrid: FakeSendGrid,
    second_worker: Callable[[], WorkerProcess],
) -> None:  # fmt: skip
    # Given the same crash, for a critical email (an emergency alert)
    message_id = killed_mid_send(env, fake_sendgrid, client, "critical")
    second_worker()
    # Then the policy for critical and high is to send again: it may arrive twice, never not at all
    wait_until(lambda: finished(engine, message_id) is not None, timeout=60, what="the job finished")
    assert len(fake_sendgrid.requests) == 2
    row = delivery(engine, "email")
    assert row is not None and (row.status, row.attempts) == ("sent", 2)


def test_a_bulk_email_whose_worker_was_killed_mid_batch_finishes_without_resending_that_batch(
    env: dict[str, str], engine: Engine, client: Client, fake_sendgrid: FakeSendGrid,
    second_worker: Callable[[], WorkerProcess],
) -> None:  # fmt: skip
    # Given 2,500 recipients (three batches), and SendGrid holding the second batch's request
    with Session(engine) as session:
        users = [
            {"id": n, "name": f"S{n}", "role": "student", "email": f"s{n}@example.edu"}
            for n in range(2, 2501)
        ]
        session.execute(insert(User), users)
        session.commit()
    fake_sendgrid.queue(
        Reply(202, None, {"X-Message-Id": "b0"}), Reply(202, None, {"X-Message-Id": "b1"}, delay=8)
    )
    worker = WorkerProcess(env, threads=2).wait_ready()
    payload = {"user_ids": list(range(1, 2501)), "template": "welcome"}
    message_id = client.send("notifications.send_bulk_email", payload, idempotency_key="term-start")
    # When the worker is killed while SendGrid holds the second batch
    fake_sendgrid.wait_for(2)
    worker.kill()
    second_worker()
    # Then the job finishes (not dead-lettered after running out of retries on InProgressError):
    # the first batch is not sent again, the second is held as an unknown outcome, the third goes out
    wait_until(lambda: finished(engine, message_id) is not None, timeout=90, what="the bulk job finished")
    assert len(fake_sendgrid.requests) == 3
    with Session(engine) as session:
        rows = dict(session.execute(select(Delivery.idempotency_key, Delivery.status)).all())
    assert rows == {
        "term-start:batch:0": "sent",
        "term-start:batch:1": "unknown",
        "term-start:batch:2": "sent",
    }
