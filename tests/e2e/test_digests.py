"""End to end: a week of events for a user becomes one digest email, sent once, through the
scheduled fan-out (send_weekly_digests → send_digest → notify_user) in a `dramatiq actors` worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import User
from store.models_notifications import DigestEvent
from tests.amqp import depth
from tests.fakes.sendgrid import FakeSendGrid
from tests.worker import wait_until

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(User(id=1, name="Ada", role="student", email="ada@example.edu", channel_order=["email"]))
        session.add(User(id=2, name="Bob", role="student", email="bob@example.edu", channel_order=["email"]))
        session.flush()
        for days_ago, summary in (
            (6, "Essay 1 graded"),
            (3, "Quiz 2 due Friday"),
            (1, "New lesson: fractions"),
        ):
            session.add(DigestEvent(user_id=1, kind="weekly", payload={"kind": "course", "summary": summary},
                                    created_at=NOW - timedelta(days=days_ago)))  # fmt: skip
        # an event older than the week waits for another digest; Bob has nothing this week
        session.add(DigestEvent(user_id=2, kind="weekly", payload={"kind": "course", "summary": "Old news"},
                                created_at=NOW - timedelta(days=9)))  # fmt: skip
        session.commit()
    yield engine
    engine.dispose()


def test_a_week_of_events_becomes_one_digest_sent_once(
    worker_client: Client, fake_sendgrid: FakeSendGrid, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    # When the scheduled fan-out runs for this week, twice (a catch-up after a scheduler restart)
    for _ in range(2):
        worker_client.send("notifications.send_weekly_digests", {"as_of": NOW.isoformat()})
    # Then Ada gets one email listing her three events, and Bob none
    [request] = fake_sendgrid.wait_for(1)
    mail = request.json()
    assert mail["personalizations"][0]["to"][0]["email"] == "ada@example.edu"
    assert mail["subject"].startswith("Your week: 3 updates")
    text = mail["content"][0]["value"]
    assert [line for line in text.splitlines() if line.startswith("- ")] == [
        "- Essay 1 graded",
        "- Quiz 2 due Friday",
        "- New lesson: fractions",
    ]
    # And her events are marked digested, Bob's old one is not
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.0)
    assert len(fake_sendgrid.requests) == 1
    with Session(engine) as session:
        digested = {e.payload["summary"]: e.digest_key for e in session.scalars(select(DigestEvent))}
    assert digested["Old news"] is None
    assert {digested[s] for s in ("Essay 1 graded", "Quiz 2 due Friday", "New lesson: fractions")} == {
        f"digest:weekly:1:{NOW.isoformat()}"
    }
