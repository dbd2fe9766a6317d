"""Sentry end to end: a worker reports each dead letter once, scrubbed, to a (fake) Sentry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.amqp import dramatiq_message, publish, take
from tests.fakes.sentry import FakeSentry
from tests.worker import WorkerProcess

KEY = b"test-signing-key"
STUDENT = "Ada Lovelace"
EMAIL = "ada.lovelace@example.edu"
PHONE = "+33 6 12 34 56 78"
API_KEY = "SG.f4k3-k3y-4bcdefgh.ijklmnopqrstuv"


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    server = FakeSentry().start()
    yield server
    server.stop()


@pytest.fixture
def worker(edujobs_env: dict[str, str], fake_sentry: FakeSentry, redis_key: str) -> Iterator[WorkerProcess]:
    env = {**edujobs_env, "EDUJOBS_SENTRY_DSN": fake_sentry.dsn, "EDUJOBS_TEST_KEY": redis_key}
    process = WorkerProcess(env, threads=2, module="tests.e2e.actors_sentry").wait_ready()
    yield process
    process.stop()


def send(url: str, actor: str, kwargs: dict[str, object], *, key: bytes | None = KEY) -> dict[str, object]:
    message = dramatiq_message(actor, "maintenance", kwargs, key=key)
    publish(url, "maintenance", message)
    return message


def stop_and_flush(worker: WorkerProcess) -> None:
    # The worker flushes Sentry when it shuts down: after this, every event it sent has arrived.
    assert worker.stop() == 0, worker.output()[-3000:]


def test_a_message_retried_until_dead_is_one_scrubbed_event(
    worker: WorkerProcess, fake_sentry: FakeSentry, amqp_url: str
) -> None:
    # Given an actor that fails transiently, with a name, an e-mail and a phone number in its error
    message = send(
        amqp_url, "testing.sentry_unreachable", {"student_name": STUDENT, "email": EMAIL, "phone": PHONE}
    )
    # When it has been tried three times and dead-lettered
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert dead.headers["x-edujobs-attempts"] == 3
    fake_sentry.wait_for_events(1)
    stop_and_flush(worker)
    # Then Sentry got exactly one event, grouped by actor and exception type
    [event] = fake_sentry.events()
    assert event["fingerprint"] == ["dramatiq", "testing.sentry_unreachable", "TransientError"]
    assert event["level"] == "error"
    assert event["environment"] == "test"
    assert event["tags"]["actor"] == "testing.sentry_unreachable"
    assert event["tags"]["queue"] == "maintenance"
    assert event["tags"]["reason"] == "retries_exhausted"
    assert event["tags"]["fingerprint"] == dead.headers["x-edujobs-fingerprint"]
    assert event["extra"]["attempts"] == 3
    assert event["extra"]["message_id"] == message["message_id"]
    assert event["extra"]["first_failure_at"] <= event["extra"]["last_failure_at"]
    # with the last attempt's stack trace, down to the actor
    [exception] = event["exception"]["values"]
    assert exception["type"] == "TransientError"
    assert exception["value"] == "could not reach [Filtered] at [Filtered] or [Filtered]"
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "unreachable"
    assert all("vars" not in frame for frame in frames)
    # And neither the arguments nor the personal data appear anywhere in what was sent
    raw = fake_sentry.raw()
    for secret in (STUDENT, EMAIL, PHONE, "Lovelace", "ada.lovelace"):
        assert secret.encode() not in raw
    assert b'"kwargs"' not in raw  # the message itself is never attached (the source code is)
    # (the SDK did report each failed attempt: its client report counts them as dropped before sending)
    reports = [item.json() for item in fake_sentry.items("client_report")]
    dropped = [d for r in reports for d in r.get("discarded_events", []) if d["reason"] == "before_send"]
    assert sum(d["quantity"] for d in dropped) >= 3


def test_a_permanent_failure_is_one_event_and_a_success_none(
    worker: WorkerProcess, fake_sentry: FakeSentry, amqp_url: str, redis_key: str
) -> None:
    # Given a message that succeeds and one that fails permanently with an e-mail and an API key
    send(amqp_url, "testing.record", {"value": "fine"})
    send(amqp_url, "testing.sentry_rejected", {"email": EMAIL, "api_key": API_KEY})
    # When the failing one is dead-lettered at once and the successful one has run
    [dead] = take(amqp_url, "maintenance.XQ", 1)
    assert dead.headers["x-edujobs-reason"] == "permanent_error"
    fake_sentry.wait_for_events(1)
    assert redis.Redis().lrange(redis_key, 0, -1) == [b"fine"]
    stop_and_flush(worker)
    # Then Sentry has one event, for the failure only
    [event] = fake_sentry.events()
    assert event["fingerprint"] == ["dramatiq", "testing.sentry_rejected", "PermanentError"]
    assert event["tags"]["reason"] == "permanent_error"
    assert event["extra"]["attempts"] == 1
    raw = fake_sentry.raw()
    assert EMAIL.encode() not in raw
    assert API_KEY.encode() not in raw
    assert b"testing.record" not in raw


def test_undecodable_and_unsigned_messages_are_one_event_each(
    worker: WorkerProcess, fake_sentry: FakeSentry, amqp_url: str
) -> None:
    # Given bytes that are not a message, and an unsigned message carrying an e-mail address
    publish(amqp_url, "maintenance", b"\x00 not json " + EMAIL.encode())
    send(amqp_url, "testing.sentry_rejected", {"email": EMAIL, "api_key": API_KEY}, key=None)
    # When both are dead-lettered
    take(amqp_url, "maintenance.XQ", 2)
    fake_sentry.wait_for_events(2)
    stop_and_flush(worker)
    # Then each is one event, grouped by its cause
    events = sorted(fake_sentry.events(), key=lambda e: e["tags"]["reason"])
    assert [e["tags"]["reason"] for e in events] == ["bad_signature", "undecodable"]
    assert events[0]["fingerprint"] == ["dramatiq", "testing.sentry_rejected", "SignatureError"]
    assert events[0]["exception"]["values"][0]["value"] == "the message is not signed"
    assert events[1]["fingerprint"] == ["dramatiq", "(undecodable)", "DecodeError"]
    assert "not a Dramatiq message" in events[1]["exception"]["values"][0]["value"]
    raw = fake_sentry.raw()
    assert EMAIL.encode() not in raw
    assert API_KEY.encode() not in raw
