"""``edujobs deliveries``: an operator sees the unknown outcomes and the claims in progress, and
resolves an unknown outcome (audited); the ledger then acts on the verdict."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ops.cli import app
from store import audit
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.once import OutcomeUnknownError, perform_once

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", migrated_database_url)
    upgrade(migrated_database_url)
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Iterator[Ledger]:
    ledger = Ledger(engine)
    yield ledger
    ledger.close()


def send(ledger: Ledger, key: str, action: Callable[[], str]) -> str:
    return perform_once(ledger, key, channel="email", actor_name="notifications.send_email",
                        message_id=f"m-{key}", user_id=7, action=action).status  # fmt: skip


def no_answer() -> str:
    raise OutcomeUnknownError("the connection to SendGrid broke before its answer")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["deliveries", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_an_operator_lists_unknown_outcomes_and_claims_in_progress(ledger: Ledger) -> None:
    # Given an email whose outcome is unknown, and another being sent right now
    assert send(ledger, "welcome:7", no_answer) == "unknown"
    ledger.begin(
        ledger.claim("grade:9", channel="email", actor_name="notifications.send_email", message_id="m9")
    )
    # When the operator lists the deliveries to look at
    code, output = cli("--json")
    # Then both are there, with who, what and why
    assert code == 0, output
    rows = {row["key"]: row for row in json.loads(output)}
    assert rows["welcome:7"]["status"] == "unknown" and rows["welcome:7"]["user_id"] == 7
    assert "broke before its answer" in rows["welcome:7"]["error"]
    assert rows["grade:9"]["status"] == "pending" and rows["grade:9"]["sending"] is True
    assert rows["grade:9"]["owner_silent_seconds"] < ledger.owner_timeout
    # And --unknown keeps only the unknown outcome; the table form shows it too
    code, output = cli("--unknown", "--json")
    assert [row["key"] for row in json.loads(output)] == ["welcome:7"]
    code, output = cli("--unknown")
    assert code == 0 and "welcome:7" in output and "unknown" in output


def test_an_unknown_outcome_resolved_as_not_sent_is_sent_by_the_next_message(
    ledger: Ledger, engine: Engine
) -> None:
    assert send(ledger, "welcome:7", no_answer) == "unknown"
    # When the operator found that the email never arrived
    code, output = cli("resolve", "welcome:7", "--channel", "email", "--not-sent", "--as", "alice")
    assert code == 0, output
    # Then the next message with that key sends it, once; and the verdict is audited
    assert send(ledger, "welcome:7", lambda: "sg-2") == "done"
    assert send(ledger, "welcome:7", lambda: "sg-3") == "duplicate"
    [entry] = audit.recent(engine, action="deliveries.resolve")
    assert (entry.actor, entry.target, entry.details) == ("alice", "email:welcome:7", {"verdict": "not sent"})


def test_an_unknown_outcome_resolved_as_sent_stays_done(ledger: Ledger) -> None:
    assert send(ledger, "welcome:7", no_answer) == "unknown"
    assert cli("resolve", "welcome:7", "--channel", "email", "--sent")[0] == 0
    assert send(ledger, "welcome:7", lambda: "sg-2") == "duplicate"
    assert cli("--unknown", "--json")[1].strip() == "[]"


def test_resolving_what_is_not_an_unknown_outcome_fails_and_a_verdict_is_required(ledger: Ledger) -> None:
    assert send(ledger, "welcome:7", lambda: "sg-1") == "done"
    code, output = cli("resolve", "welcome:7", "--channel", "email", "--not-sent")
    assert code == 1 and "no unknown outcome" in output
    code, output = cli("resolve", "welcome:7", "--channel", "email")
    assert code == 2 and "--sent or --not-sent" in output
