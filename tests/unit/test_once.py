"""perform_once: a side effect runs at most once per idempotency key, whatever the redeliveries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from contracts.errors import InProgressError, ProviderUnavailableError
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.once import perform_once


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
