"""perform_once: a side effect runs at most once per idempotency key, whatever the redeliveries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from contracts.errors import InProgressError, ProviderUnavailableError
from store.db import make_engine
from store.ledger import SKIPPED, Ledger
from store.migrate import upgrade
from store.once import OutcomeUnknownError, perform_once


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path}/once.db"
    upgrade(url)
    engine: Engine = make_engine(url)
    yield Ledger(engine, lease_seconds=600)
    engine.dispose()


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


def test_a_failed_attempt_releases_the_key_for_the_retry(ledger: Ledger) -> None:
    def fail() -> str:
        raise ProviderUnavailableError("503")

    with pytest.raises(ProviderUnavailableError):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=fail)
    retried = perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=lambda: "p2")
    assert retried.status == "done"
    delivery = ledger.get("k")
    assert delivery is not None and delivery.status == "sent" and delivery.attempts == 2


def test_an_interrupted_attempt_blocks_others_until_its_lease_expires(ledger: Ledger) -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt  # a time limit or shutdown lands mid-call: did the provider act?

    with pytest.raises(KeyboardInterrupt):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=interrupted)
    with pytest.raises(InProgressError):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=lambda: "p")


def test_a_send_with_an_unknown_outcome_keeps_its_claim_until_the_lease_expires(tmp_path: Path) -> None:
    # Given a ledger whose leases last one second, and a send that timed out after the request left
    url = f"sqlite:///{tmp_path}/lease.db"
    upgrade(url)
    engine = make_engine(url)
    ledger = Ledger(engine, lease_seconds=1)
    sent: list[str] = []

    def timed_out() -> str:
        raise OutcomeUnknownError("no answer in time")

    with pytest.raises(OutcomeUnknownError):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=timed_out)
    # When it is retried at once, the provider may have the email: nothing is sent
    with pytest.raises(InProgressError):
        perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=lambda: "x")

    # And once the lease expired, the retry sends
    def send() -> str:
        sent.append("email")
        return "p2"

    time.sleep(1.1)
    retried = perform_once(ledger, "k", channel="email", actor_name="a", message_id="m1", action=send)
    assert retried.status == "done" and sent == ["email"]
    engine.dispose()


def test_a_skipped_row_does_not_count_as_done(ledger: Ledger) -> None:
    ledger.record(
        "k:sms", status=SKIPPED, channel="sms", actor_name="a", message_id="m1", error="not configured"
    )
    skipped = ledger.get("k:sms")
    assert skipped is not None and (skipped.status, skipped.error) == ("skipped", "not configured")
    done = perform_once(ledger, "k:sms", channel="sms", actor_name="a", message_id="m1", action=lambda: "SM1")
    assert done.status == "done"
    # A later skip does not overwrite a sent row
    assert not ledger.record("k:sms", status=SKIPPED, channel="sms", actor_name="a", message_id="m2")
    sent = ledger.get("k:sms")
    assert sent is not None and (sent.status, sent.provider_message_id) == ("sent", "SM1")
