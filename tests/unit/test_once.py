"""perform_once and the ledger's rules: once per key and channel, owner-checked, judged by the
database's clock, and the unknown-outcome policy (held, or resent for urgent messages)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from contracts.errors import InProgressError, ProviderUnavailableError
from store import ledger as ledger_module
from store.db import make_engine
from store.ledger import SKIPPED, ClaimLostError, Ledger
from store.migrate import upgrade
from store.once import Outcome, OutcomeUnknownError, _unknown_outcomes, perform_once, request_leaving


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/once.db"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Iterator[Ledger]:
    ledger = Ledger(engine, lease_seconds=600)
    yield ledger
    ledger.close()


@pytest.fixture
def other(engine: Engine) -> Iterator[Ledger]:
    """Another worker process's ledger on the same database (its own owner)."""
    ledger = Ledger(engine, lease_seconds=600)
    yield ledger
    ledger.close()


def once(
    ledger: Ledger, action: Callable[[], str | None], channel: str = "email", resend_unknown: bool = False
) -> Outcome:
    return perform_once(ledger, "k", channel=channel, actor_name="a", message_id="m1", action=action,
                        resend_unknown=resend_unknown)  # fmt: skip


def held(channel: str) -> float:
    return _unknown_outcomes().labels(channel, "held")._value.get()  # type: ignore[no-any-return]


def test_the_second_delivery_does_not_repeat_the_side_effect(ledger: Ledger) -> None:
    sent: list[str] = []

    def send() -> str:
        sent.append("email")
        return "provider-1"

    first = perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=send)
    again = perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=send)
    assert sent == ["email"]
    assert (first.status, again.status) == ("done", "duplicate")
    assert again.provider_message_id == "provider-1"


def test_an_email_and_an_sms_under_one_key_are_two_side_effects(ledger: Ledger) -> None:
    # Given an email sent under the key "welcome:7"
    assert perform_once(ledger, "welcome:7", channel="email", actor_name="a", message_id="m1",
                        action=lambda: "sg-1").status == "done"  # fmt: skip
    # When an SMS is sent under the same key
    sms = perform_once(
        ledger, "welcome:7", channel="sms", actor_name="a", message_id="m2", action=lambda: "SM1"
    )
    # Then it goes out too: the key is separated by channel
    assert (sms.status, sms.provider_message_id) == ("done", "SM1")


def test_a_failed_attempt_releases_the_key_for_the_retry(ledger: Ledger) -> None:
    def fail() -> str:
        raise ProviderUnavailableError("503")

    with pytest.raises(ProviderUnavailableError):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=fail)
    retried = perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=lambda: "p2")
    assert retried.status == "done"
    delivery = ledger.get("k", "email")
    assert delivery is not None and delivery.status == "sent" and delivery.attempts == 2


def test_an_attempt_meeting_a_live_claim_waits_for_it_without_guessing(ledger: Ledger, other: Ledger) -> None:
    # Given a worker that claimed a key and is sending it now (its heartbeat is fresh)
    ledger.claim("k", channel="email", actor_name="a", message_id="m1")
    # When a redelivery of the message reaches another worker
    with pytest.raises(InProgressError) as raised:
        once(other, lambda: "never")
    # Then it waits until the first one could be judged: no sooner than its owner could look dead
    assert raised.value.retry_after is not None and 1 <= raised.value.retry_after <= other.owner_timeout + 1


def test_a_claim_whose_worker_stopped_before_sending_is_performed_at_once(
    ledger: Ledger, other: Ledger
) -> None:
    # Given a worker that claimed a key, then stopped before its request left
    ledger.claim("k", channel="email", actor_name="a", message_id="m1")
    ledger.close()
    # When the redelivery claims it: the request provably never left, so it is sent now
    outcome = once(other, lambda: "sg-2")
    assert outcome.status == "done"
    delivery = other.get("k", "email")
    assert delivery is not None and (delivery.status, delivery.attempts) == ("sent", 2)


def test_a_claim_whose_worker_stopped_mid_send_is_held_as_unknown(ledger: Ledger, other: Ledger) -> None:
    # Given a worker whose request may have left when it stopped
    claim = ledger.claim("k", channel="email", actor_name="a", message_id="m1")
    ledger.begin(claim)
    ledger.close()
    before = held("email")
    # When a normal-priority redelivery claims it
    sent: list[str] = []

    def send_again() -> str:
        sent.append("again")
        return "x"

    outcome = once(other, send_again)
    # Then nothing is sent again: the outcome is unknown, on record and counted
    assert outcome.status == "unknown" and sent == []
    delivery = other.get("k", "email")
    assert delivery is not None and delivery.status == "unknown"
    assert delivery.error is not None and "worker stopped after its request may have left" in delivery.error
    assert held("email") == before + 1
    # And later redeliveries do not send either
    assert once(other, lambda: "x").status == "unknown"


def test_an_urgent_message_is_resent_after_an_unknown_outcome(ledger: Ledger, other: Ledger) -> None:
    claim = ledger.claim("k", channel="sms", actor_name="a", message_id="m1")
    ledger.begin(claim)
    ledger.close()
    # When a critical or high priority redelivery claims it, the policy is to send again
    outcome = once(other, lambda: "SM2", channel="sms", resend_unknown=True)
    assert outcome.status == "done"


def test_a_provider_failure_of_unknown_outcome_is_held_not_retried(ledger: Ledger) -> None:
    def no_answer() -> str:
        raise OutcomeUnknownError("the connection to SendGrid broke before its answer")

    # When the provider may have the email but did not say so
    outcome = once(ledger, no_answer)
    # Then the message ends (no retry would send it again) and the ledger says unknown, with why
    assert outcome.status == "unknown"
    delivery = ledger.get("k", "email")
    assert (
        delivery is not None
        and delivery.status == "unknown"
        and "broke before its answer" in (delivery.error or "")
    )
    assert once(ledger, lambda: "x").status == "unknown"


def test_an_urgent_provider_failure_of_unknown_outcome_is_retried(ledger: Ledger) -> None:
    def no_answer() -> str:
        raise OutcomeUnknownError("read timeout")

    with pytest.raises(OutcomeUnknownError):
        once(ledger, no_answer, resend_unknown=True)
    assert once(ledger, lambda: "sg-2", resend_unknown=True).status == "done"


def test_an_attempt_interrupted_mid_call_applies_the_policy_itself(ledger: Ledger) -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt  # a time limit or shutdown lands mid-call: did the provider act?

    with pytest.raises(KeyboardInterrupt):
        once(ledger, interrupted)
    # Its retry does not wait for anything to be judged: the outcome is unknown, and held
    assert once(ledger, lambda: "x").status == "unknown"


def test_a_claim_taken_over_cannot_be_sent_or_completed_by_its_old_holder(
    engine: Engine, other: Ledger
) -> None:
    # Given a claim that hung past its lease and was taken over by another attempt
    slow = Ledger(engine, lease_seconds=0)
    first = slow.claim("k", channel="email", actor_name="a", message_id="m1")
    second = slow.claim("k", channel="email", actor_name="a", message_id="m2")
    assert second.acquired
    # Then the first may not send, nor release or complete what the second holds
    with pytest.raises(ClaimLostError):
        slow.begin(first)
    slow.release(first, error="late")
    assert not slow.complete(first, provider_message_id="late")
    delivery = slow.get("k", "email")
    assert delivery is not None and (delivery.status, delivery.message_id) == ("pending", "m2")
    slow.close()


def test_a_worker_with_a_fast_clock_does_not_take_over_a_fresh_claim(
    ledger: Ledger, other: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claim made a moment ago by one worker
    ledger.claim("k", channel="email", actor_name="a", message_id="m1")
    # When another worker, whose clock is an hour ahead, claims it
    monkeypatch.setattr(ledger_module, "utcnow", lambda: datetime.now(UTC) + timedelta(hours=1))
    # Then the database's clock judges it: it is fresh, and it waits
    with pytest.raises(InProgressError):
        once(other, lambda: "x")


def test_a_skipped_row_does_not_count_as_done(ledger: Ledger) -> None:
    ledger.record(
        "k:sms", status=SKIPPED, channel="sms", actor_name="a", message_id="m1", error="not configured"
    )
    skipped = ledger.get("k:sms", "sms")
    assert skipped is not None and (skipped.status, skipped.error) == ("skipped", "not configured")
    done = perform_once(ledger, "k:sms", channel="sms", actor_name="a", message_id="m1", action=lambda: "SM1")
    assert done.status == "done"
    # A later skip does not overwrite a sent row
    assert not ledger.record("k:sms", status=SKIPPED, channel="sms", actor_name="a", message_id="m2")
    sent = ledger.get("k:sms", "sms")
    assert sent is not None and (sent.status, sent.provider_message_id) == ("sent", "SM1")


def test_an_adapter_interrupted_before_its_request_left_gives_the_claim_back(ledger: Ledger) -> None:
    # Given an action that marks when its request leaves (as the provider adapters do)
    def interrupted_before_the_wire() -> str:
        raise KeyboardInterrupt  # e.g. a time limit while waiting for the breaker's Redis

    with pytest.raises(KeyboardInterrupt):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1",
                     action=interrupted_before_the_wire, marks_leaving=True)  # fmt: skip
    # Then nothing left: the retry sends it
    assert once(ledger, lambda: "sg-2").status == "done"


def test_an_adapter_interrupted_after_its_request_left_is_an_unknown_outcome(ledger: Ledger) -> None:
    def interrupted_on_the_wire() -> str:
        request_leaving()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1",
                     action=interrupted_on_the_wire, marks_leaving=True)  # fmt: skip
    assert once(ledger, lambda: "x").status == "unknown"
