"""Sentry reporting in-process: the real sentry-sdk, a StubBroker worker and a fake Sentry server.

The StubBroker does not dead-letter through ``EdujobsBroker``, so these tests call the reporter's
``after_dead_letter`` hook the way the broker does once a dead letter is confirmed; the e2e tests run
the whole path on RabbitMQ.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import dramatiq
import pybreaker
import pytest
import sentry_sdk
from dramatiq.brokers.stub import StubBroker
from sentry_sdk.integrations.dramatiq import SentryMiddleware

from brokers.dlq import build_record
from brokers.settings import Settings
from brokers.stack import build_middleware
from contracts.errors import TransientError
from middleware.sentry import (
    SentryReporter,
    before_breadcrumb,
    before_send,
    capture_check_in,
    capture_dead_letter,
    init_sentry,
    report_breaker_transition,
)
from tests.fakes.sentry import FakeSentry

if TYPE_CHECKING:
    from sentry_sdk._types import Event

EMAIL = "grace.hopper@example.org"
NAME = "Grace Hopper"


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry().start()
    assert init_sentry(dsn=server.dsn, environment="test", release="edujobs@test")
    yield server
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)  # later tests build brokers without Sentry
    server.stop()


def sent(server: FakeSentry) -> list[dict[str, Any]]:
    sentry_sdk.flush(timeout=5)
    return server.events()


@pytest.fixture
def sentry_broker(sentry: FakeSentry) -> Iterator[StubBroker]:
    """A StubBroker built after Sentry started, with edujobs' stack (SentryReporter included)."""
    broker = StubBroker(middleware=build_middleware(Settings(record_job_state=False, sentry_dsn=sentry.dsn)))
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


def reporter_of(broker: StubBroker) -> SentryReporter:
    [reporter] = [m for m in broker.middleware if isinstance(m, SentryReporter)]
    return reporter


def test_init_adds_sentrys_dramatiq_middleware_to_brokers_built_afterwards(sentry_broker: StubBroker) -> None:
    assert isinstance(sentry_broker.middleware[0], SentryMiddleware)
    # and starting Sentry again with the same DSN (a second brokers.setup()) changes nothing
    assert init_sentry(dsn=sentry_sdk.get_client().options["dsn"]) is False


def test_failed_attempts_send_nothing_and_the_dead_letter_sends_one_event(
    sentry: FakeSentry, sentry_broker: StubBroker
) -> None:
    # Given an actor that always fails, with personal data in its error, retried twice
    @dramatiq.actor(
        broker=sentry_broker, max_retries=2, min_backoff=1, max_backoff=2, actor_name="t.unreachable"
    )
    def unreachable(name: str, email: str) -> None:
        raise TransientError(f"could not reach {name} at {email}")

    worker = dramatiq.Worker(sentry_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        message = unreachable.send(NAME, EMAIL)
        sentry_broker.join(unreachable.queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    # When its three attempts failed, nothing reached Sentry (Dramatiq's error log and the
    # integration's per-attempt events are dropped)
    assert sent(sentry) == []
    [dead] = sentry_broker.dead_letters
    # And when the broker confirms the dead letter
    record = build_record(
        reason="retries_exhausted",
        actor_name="t.unreachable",
        worker="w1",
        exception_type="TransientError",
        error=f"could not reach {NAME} at {EMAIL}",
        attempts=3,
    )
    reporter_of(sentry_broker).after_dead_letter(sentry_broker, "default", record, dead._message)
    # Then Sentry gets one event, grouped by actor and exception, with the last attempt's stack trace
    [event] = sent(sentry)
    assert event["fingerprint"] == ["dramatiq", "t.unreachable", "TransientError"]
    assert event["tags"]["reason"] == "retries_exhausted"
    assert event["extra"]["message_id"] == message.message_id
    assert event["extra"]["attempts"] == 3
    assert event["release"] == "edujobs@test"
    [exception] = event["exception"]["values"]
    assert exception["value"] == "could not reach [Filtered] at [Filtered]"
    assert exception["stacktrace"]["frames"][-1]["function"] == "unreachable"
    raw = sentry.raw()
    assert NAME.encode() not in raw and EMAIL.encode() not in raw
    # And the stack trace kept until the dead letter was confirmed is released
    assert not reporter_of(sentry_broker)._pending


def test_an_undecodable_dead_letter_is_reported_with_its_record(sentry: FakeSentry) -> None:
    record = build_record(
        reason="undecodable",
        actor_name="",
        worker="w1",
        exception_type="DecodeError",
        error="the body is not a Dramatiq message (31 bytes): Expecting value",
    )
    assert capture_dead_letter("media", record, None) is not None
    [event] = sent(sentry)
    assert event["fingerprint"] == ["dramatiq", "(undecodable)", "DecodeError"]
    assert event["tags"] == {
        "actor": "(undecodable)",
        "queue": "media",
        "reason": "undecodable",
        "exception_type": "DecodeError",
        "fingerprint": record["fingerprint"],
    }
    assert event["extra"]["dead_letter_queue"] == "media.XQ"


def test_events_from_inside_an_actor_lose_the_messages_arguments(
    sentry: FakeSentry, sentry_broker: StubBroker
) -> None:
    # Given an actor that reports something itself (here a breaker opening) while it runs
    @dramatiq.actor(broker=sentry_broker, max_retries=0, actor_name="t.notify")
    def notify(name: str, email: str) -> None:
        report_breaker_transition("sendgrid", "closed", "open")

    worker = dramatiq.Worker(sentry_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        notify.send(NAME, EMAIL)
        sentry_broker.join(notify.queue_name)
        worker.join()
    finally:
        worker.stop()
    # Then the event carries the message's identity in contexts.dramatiq, never its arguments
    [event] = sent(sentry)
    data = event["contexts"]["dramatiq"]["data"]
    assert data["actor_name"] == "t.notify"
    assert "args" not in data and "kwargs" not in data
    raw = sentry.raw()
    assert NAME.encode() not in raw and EMAIL.encode() not in raw


def test_a_breaker_opening_is_reported_once_and_other_transitions_not(sentry: FakeSentry) -> None:
    opened_at = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
    # Given a breaker that opens, is seen open by a second listener, tries, re-opens and closes
    report_breaker_transition("twilio", "closed", "open", opened_at=opened_at)
    report_breaker_transition("twilio", "closed", "open", opened_at=opened_at)
    report_breaker_transition("twilio", "open", "half-open")
    report_breaker_transition("twilio", "half-open", "open")
    report_breaker_transition("twilio", "half-open", "closed")
    # Then Sentry has one event, grouped by provider
    [event] = sent(sentry)
    assert event["fingerprint"] == ["circuit-breaker", "twilio"]
    assert event["level"] == "warning"
    assert event["tags"]["provider"] == "twilio"
    assert event["extra"]["opened_at"] == opened_at.isoformat()


def test_a_claim_held_by_another_process_means_no_report(sentry: FakeSentry) -> None:
    claimed: set[str] = {"circuit-breaker:fcm:2025-01-06T08:00:00+00:00"}

    def claim(key: str) -> bool:
        if key in claimed:
            return False
        claimed.add(key)
        return True

    opened_at = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
    assert report_breaker_transition("fcm", "closed", "open", opened_at=opened_at, claim=claim) is None
    assert sent(sentry) == []


def test_a_pybreaker_listener_reports_the_real_breakers_opening(sentry: FakeSentry) -> None:
    # Given a pybreaker breaker whose listener forwards transitions, as the breaker middleware does
    class Forward(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
            report_breaker_transition(str(cb.name), old, new, opened_at=cb._state_storage.opened_at)

    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="storage", listeners=[Forward()])

    def fail() -> None:
        raise OSError("storage down")

    # When it trips
    for _ in range(2):
        with pytest.raises((OSError, pybreaker.CircuitBreakerError)):
            breaker.call(fail)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(fail)
    # Then one opening is reported
    [event] = sent(sentry)
    assert event["fingerprint"] == ["circuit-breaker", "storage"]
    assert event["extra"]["previous_state"] == "closed"


def test_check_ins_reach_sentry_crons_with_the_monitor_schedule(sentry: FakeSentry) -> None:
    check_in_id = capture_check_in(
        "daily-cleanup", "in_progress", schedule="0 2 * * *", timezone="Europe/Paris"
    )
    capture_check_in("daily-cleanup", "ok", check_in_id=check_in_id, duration=1.5)
    sentry_sdk.flush(timeout=5)
    started, finished = sentry.check_ins()
    assert started["monitor_slug"] == "daily-cleanup"
    assert started["status"] == "in_progress"
    assert started["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 2 * * *"},
        "timezone": "Europe/Paris",
    }
    assert finished["check_in_id"] == started["check_in_id"] == check_in_id
    assert finished["status"] == "ok"
    assert finished["duration"] == 1.5
    assert sentry.events() == []


def test_log_lines_that_print_a_message_keep_its_actor_and_id_not_its_arguments() -> None:
    # Given Dramatiq logging a message with %s, which prints its arguments
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name="default", actor_name="t.notify", args=(NAME, EMAIL), kwargs={}, options={}
    )
    record = logging.LogRecord(
        "dramatiq.worker.WorkerThread",
        logging.WARNING,
        __file__,
        1,
        "Message %s was skipped.",
        (message,),
        None,
    )
    # Then its breadcrumb and its event name the actor and message id only
    crumb = before_breadcrumb({"message": record.getMessage()}, {"log_record": record})
    assert crumb == {"message": f"Message t.notify[{message.message_id}] was skipped."}
    event = before_send(
        cast(
            "Event",
            {"logentry": {"message": record.msg, "formatted": record.getMessage(), "params": [str(message)]}},
        ),
        {"log_record": record},
    )
    assert event is not None
    assert NAME not in json.dumps(event) and EMAIL not in json.dumps(event)
    assert event["logentry"]["formatted"] == f"Message t.notify[{message.message_id}] was skipped."
