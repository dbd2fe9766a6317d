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
def edujobs_env(shared_env: dict[str, str]) -> dict[str, str]:
    """One worker for the module's tests; each starts on empty queues, database and fakes."""
    return shared_env


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


def test_delivered_grades_and_reports_become_lines_of_the_weekly_digest_once(
    worker_client: Client, fake_sendgrid: FakeSendGrid, engine: Engine, edujobs_env: dict[str, str]
) -> None:
    # Given Bob is notified of a finished report and of a day's grades, each message sent twice
    report = {"report_name": "Q1 grades", "report_format": "pdf", "download_url": "https://x.test/r/1"}
    grades = {"date": "2026-11-30", "grades": [
        {"course": "Algebra", "assignment": "Quiz 3", "score": 18, "max_score": 20},
        {"course": "History", "assignment": "Essay", "score": 15, "max_score": 20},
    ]}  # fmt: skip
    for _ in range(2):
        worker_client.send("notifications.notify_user", {"user_id": 2, "template": "report_ready",
                           "context": report}, idempotency_key="report:9:2")  # fmt: skip
        worker_client.send("notifications.notify_user", {"user_id": 2, "template": "daily_grade_digest",
                           "context": grades}, idempotency_key="grade-digest:2:2026-11-30T07")  # fmt: skip
    fake_sendgrid.wait_for(2)
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.0)
    # Then his next weekly digest holds one line per report and per grade, each once
    with Session(engine) as session:
        lines = sorted(
            e.payload["summary"]
            for e in session.scalars(select(DigestEvent).where(DigestEvent.user_id == 2))
            if e.payload["summary"] != "Old news"
        )
    assert lines == ["Algebra, Quiz 3: 18/20", "History, Essay: 15/20", 'Report "Q1 grades" (PDF) is ready']
    # And the Sunday fan-out sends them to him in one email (and Ada hers)
    sunday = (NOW + timedelta(hours=1)).isoformat()
    worker_client.send("notifications.send_weekly_digests", {"as_of": sunday})
    digests = [r.json() for r in fake_sendgrid.wait_for(4)[2:]]
    [bobs] = [d for d in digests if d["personalizations"][0]["to"][0]["email"] == "bob@example.edu"]
    text = bobs["content"][0]["value"]
    assert "- Algebra, Quiz 3: 18/20" in text and '- Report "Q1 grades" (PDF) is ready' in text
