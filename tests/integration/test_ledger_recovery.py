"""Finding 13, ledger side: the claims of a worker process killed outright (SIGKILL) are judged as
soon as its heartbeat is overdue, on PostgreSQL and SQLite, by another process.

The dead worker is a real process: it claims a key (and, for the second case, marks that its
request may have left), then kills itself with SIGKILL, leaving its claim and its owner row as a
crash leaves them. Nothing here moves a clock or edits a row.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.errors import InProgressError
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.once import Outcome, perform_once
from tests.services import postgres_database
from tests.worker import ROOT, wait_until

pytestmark = pytest.mark.integration

OWNER_TIMEOUT = 2.0

DYING_WORKER = """
import os, signal, sys
from store.db import make_engine
from store.ledger import Ledger
ledger = Ledger(make_engine(sys.argv[1]), owner_timeout=float(sys.argv[3]))
claim = ledger.claim("welcome:1", channel="email", actor_name="a", message_id="m1")
if sys.argv[2] == "sending":
    ledger.begin(claim)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
        upgrade(url)
        yield url
        return
    with postgres_database(migrated=True) as url:
        upgrade(url)
        yield url


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    engine = make_engine(url)
    ledger = Ledger(engine, owner_timeout=OWNER_TIMEOUT)
    yield ledger
    ledger.close()
    engine.dispose()


def die_holding_a_claim(url: str, phase: str) -> None:
    child = subprocess.run([sys.executable, "-c", DYING_WORKER, url, phase, str(OWNER_TIMEOUT)], cwd=ROOT,
                           capture_output=True, timeout=60)  # fmt: skip
    assert child.returncode == -9, child.stderr.decode()


def redeliver(ledger: Ledger, sent: list[str], resend_unknown: bool = False) -> Outcome | None:
    """One attempt of the redelivered message; None while it is told to wait."""

    def send() -> str:
        sent.append("email")
        return "sg-2"

    try:
        return perform_once(ledger, "welcome:1", channel="email", actor_name="a", message_id="m1",
                            action=send, resend_unknown=resend_unknown)  # fmt: skip
    except InProgressError as e:
        assert e.retry_after is not None and e.retry_after <= OWNER_TIMEOUT + 1
        return None


def judged(ledger: Ledger, sent: list[str], resend_unknown: bool = False) -> Outcome:
    """The outcome once the dead worker's claim is judged: within the owner timeout and a little,
    not a fixed 10-minute lease."""
    outcomes: list[Outcome] = []

    def attempt() -> bool:
        outcome = redeliver(ledger, sent, resend_unknown)
        if outcome is not None:
            outcomes.append(outcome)
        return outcome is not None

    wait_until(attempt, timeout=OWNER_TIMEOUT * 10, what="the dead worker's claim is judged")
    return outcomes[0]


def test_a_claim_left_before_its_request_left_is_performed_once_the_worker_is_overdue(
    url: str, ledger: Ledger
) -> None:
    # Given a worker killed after claiming, before its request could leave
    die_holding_a_claim(url, "claimed")
    sent: list[str] = []
    # When the redelivered message claims it: first it waits, then the claim is judged
    outcome = judged(ledger, sent)
    # Then the email is sent, once
    assert outcome.status == "done" and sent == ["email"]
    delivery = ledger.get("welcome:1", "email")
    assert delivery is not None and (delivery.status, delivery.attempts) == ("sent", 2)


def test_a_claim_left_mid_send_is_held_as_an_unknown_outcome(url: str, ledger: Ledger) -> None:
    # Given a worker killed while its request may have been at the provider
    die_holding_a_claim(url, "sending")
    sent: list[str] = []
    # When the normal-priority redelivery claims it
    outcome = judged(ledger, sent)
    # Then nothing is sent again: held, for an operator
    assert outcome.status == "unknown" and sent == []
    delivery = ledger.get("welcome:1", "email")
    assert delivery is not None and delivery.status == "unknown"


def test_an_urgent_claim_left_mid_send_is_sent_again(url: str, ledger: Ledger) -> None:
    die_holding_a_claim(url, "sending")
    sent: list[str] = []
    outcome = judged(ledger, sent, resend_unknown=True)
    assert outcome.status == "done" and sent == ["email"]
