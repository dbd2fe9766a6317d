"""End to end: jobs sent from Node.js (clients/node) run on a `dramatiq actors` worker.

The Node client is run as a service would run it (``node clients/node/test/send.mjs``), against
the real RabbitMQ and a worker of the real actors with the fake SendGrid. Without node (or without
``npm ci`` in clients/node) the tests skip locally and fail in CI (``CI=true``), like the services.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from store.db import make_engine
from store.migrate import upgrade
from store.models import Delivery, JobRecord, User
from tests.amqp import depth, take
from tests.fakes.sendgrid import FakeSendGrid
from tests.services import postgres_database, rabbitmq_vhost
from tests.worker import WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "node"
SEND = CLIENT / "test" / "send.mjs"


def node_or_skip() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (CLIENT / "node_modules" / "amqplib").is_dir():
        problem = "clients/node has no node_modules: run `make test-node` (npm ci) first"
    if problem is None:
        assert node is not None
        return node
    if os.environ.get("CI"):
        pytest.fail(problem + " (CI runs make test-node first: see .ci/run)")
    pytest.skip(problem)


Stack = tuple[dict[str, str], FakeSendGrid, Engine, str]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One worker of the real actors for the module, with the fake SendGrid and a user to mail."""
    node = node_or_skip()
    sendgrid = FakeSendGrid().start()
    with rabbitmq_vhost() as url, postgres_database(migrated=True) as database:
        upgrade(database)
        engine = make_engine(database)
        with Session(engine) as session:
            session.add(User(id=1, email="ada@example.edu", name="Ada Lovelace", role="student"))
            session.commit()
        env = {
            "EDUJOBS_ENVIRONMENT": "test",
            "EDUJOBS_RABBITMQ_URL": url,
            "EDUJOBS_DATABASE_URL": database,
            "EDUJOBS_SENDGRID_HOST": sendgrid.url,
            "EDUJOBS_SENDGRID_API_KEY": "SG.test-key",
            "EDUJOBS_SENDGRID_TIMEOUT": "5",
            "EDUJOBS_EMAIL_FROM": "school@example.edu",
            "EDUJOBS_SIGNING_KEY": "test-signing-key",
            "EDUJOBS_METRICS_PORT": "0",
        }
        worker = WorkerProcess(env, threads=2, queues=("notifications",)).wait_ready()
        try:
            yield env, sendgrid, engine, node
        finally:
            worker.stop()
            engine.dispose()
            sendgrid.stop()


def send_from_node(
    stack: Stack, actor: str, payload: object, options: dict[str, object], key: str = "test-signing-key"
) -> subprocess.CompletedProcess[str]:
    """Run test/send.mjs (the Node client's send) with the options, signing with ``key``."""
    env, _, _, node = stack
    return subprocess.run(
        [node, str(SEND), actor, json.dumps(payload), json.dumps(options)],
        cwd=CLIENT,
        env={
            **os.environ,
            "EDUJOBS_RABBITMQ_URL": env["EDUJOBS_RABBITMQ_URL"],
            "EDUJOBS_SIGNING_KEY": key,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def sent_id(stack: Stack, actor: str, payload: object, **options: object) -> str:
    """Send from Node; the message id it printed."""
    sent = send_from_node(stack, actor, payload, options)
    assert sent.returncode == 0, sent.stderr
    return sent.stdout.strip()


WELCOME = {"user_id": 1, "template": "welcome", "context": {"platform_name": "SkillCore"}}


def job(engine: Engine, message_id: str) -> JobRecord | None:
    with Session(engine) as session:
        return session.get(JobRecord, message_id)


def started_at(engine: Engine, message_id: str) -> datetime | None:
    record = job(engine, message_id)
    return record.started_at if record is not None and record.state == "succeeded" else None


def mails_for(sendgrid: FakeSendGrid, message_id: str) -> list[dict[str, object]]:
    return [m for m in (r.json() for r in sendgrid.requests) if m["custom_args"]["message_id"] == message_id]


def test_an_email_sent_from_node_reaches_sendgrid_once(stack: Stack) -> None:
    env, sendgrid, engine, _ = stack
    # When a Node service sends notifications.send_email with an idempotency key
    message_id = sent_id(stack, "notifications.send_email", WELCOME, idempotencyKey="node:welcome:1")
    # Then the worker verifies it and SendGrid receives the email, rendered for that user
    wait_until(lambda: mails_for(sendgrid, message_id), what="the email at SendGrid")
    [mail] = mails_for(sendgrid, message_id)
    assert mail["personalizations"] == [{"to": [{"email": "ada@example.edu", "name": "Ada Lovelace"}]}]
    assert mail["subject"] == "Welcome to SkillCore, Ada Lovelace!"
    wait_until(lambda: started_at(engine, message_id), what="the job to succeed")
    first = started_at(engine, message_id)
    assert first is not None
    # When the Node service sends the very same email again (a retry on its side)
    again = sent_id(stack, "notifications.send_email", WELCOME, idempotencyKey="node:welcome:1")
    assert again == message_id  # the same key gives the same id
    # Then the worker runs it again (a later attempt has succeeded) but SendGrid got one email
    wait_until(lambda: (started_at(engine, message_id) or first) > first, what="the second run")
    assert len(mails_for(sendgrid, message_id)) == 1
    with Session(engine) as session:
        assert [
            d.status for d in session.scalars(select(Delivery).where(Delivery.message_id == message_id))
        ] == ["sent"]
    assert depth(env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ") == 0


def test_a_delayed_high_priority_email_from_node_runs(stack: Stack) -> None:
    env, sendgrid, engine, _ = stack
    # When a Node service sends an email at high priority, delayed by a second
    message_id = sent_id(
        stack, "notifications.send_email", {"user_id": 1, "template": "welcome"}, priority="high", delay=1
    )
    # Then it waits in the delay queue, and is delivered and run: SendGrid gets the email
    wait_until(lambda: mails_for(sendgrid, message_id), timeout=60, what="the delayed email")
    wait_until(lambda: started_at(engine, message_id), what="the job to succeed")
    record = job(engine, message_id)
    assert record is not None and record.attempts == 1
    assert depth(env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ") == 0


def test_a_bad_payload_is_refused_in_node_and_nothing_is_sent(stack: Stack) -> None:
    env = stack[0]
    refused = send_from_node(stack, "notifications.send_email", {"user_id": "ada"}, {})
    assert refused.returncode == 1
    assert "ContractError: invalid payload for notifications.send_email" in refused.stderr
    assert "user_id: must be integer" in refused.stderr and "template: field required" in refused.stderr
    assert depth(env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0


def test_a_message_node_signed_with_another_key_is_dead_lettered_unrun(stack: Stack) -> None:
    env, sendgrid, _, _ = stack
    # When a Node service signs with a key the workers do not accept
    sent = send_from_node(
        stack, "notifications.send_email", {"user_id": 1, "template": "welcome"}, {}, key="not-it"
    )
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    # Then the worker dead-letters it as bad_signature, and no email goes out
    [letter] = take(env["EDUJOBS_RABBITMQ_URL"], "notifications.XQ", 1)
    assert letter.message()["message_id"] == message_id
    assert letter.headers["x-edujobs-reason"] == "bad_signature"
    assert mails_for(sendgrid, message_id) == []
