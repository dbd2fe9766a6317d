"""End to end: a bulk email to 10,000 users goes out in at most 10 SendGrid requests, one
personalization per reachable user, and a repeated job sends nothing more."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from brokers.client import Client
from store.db import make_engine
from store.models import User
from tests.amqp import depth
from tests.fakes.sendgrid import FakeSendGrid
from tests.worker import wait_until

USERS = 10_000


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    rows = [
        {
            "id": n,
            "name": f"Student {n}",
            "role": "student",
            # every 100th has no address, every 250th opted out of email
            "email": None if n % 100 == 0 else f"student{n}@example.edu",
            "opted_out": ["email"] if n % 250 == 0 else [],
        }
        for n in range(1, USERS + 1)
    ]
    with Session(engine) as session:
        session.execute(insert(User), rows)
        session.commit()
    yield engine
    engine.dispose()


def test_ten_thousand_recipients_take_ten_requests_and_a_rerun_sends_nothing(
    worker_client: Client, fake_sendgrid: FakeSendGrid, edujobs_env: dict[str, str]
) -> None:
    payload = {
        "user_ids": list(range(1, USERS + 1)),
        "template": "emergency_alert",
        "context": {"title": "School closed", "body": "Dear -name-, the school is closed today."},
    }
    # When a service sends the bulk email
    message_id = worker_client.send(
        "notifications.send_bulk_email", payload, idempotency_key="closure:2026-11-23"
    )
    # Then SendGrid gets 10 requests of at most 1,000 personalizations, one per reachable user
    requests = fake_sendgrid.wait_for(10, timeout=60)
    bodies = [r.json() for r in requests]
    reachable = {f"student{n}@example.edu" for n in range(1, USERS + 1) if n % 100 and n % 250}
    addresses = [p["to"][0]["email"] for b in bodies for p in b["personalizations"]]
    assert len(bodies) == 10 and all(len(b["personalizations"]) <= 1000 for b in bodies)
    assert sorted(addresses) == sorted(reachable)
    # And each personalization carries the recipient's name for the text's -name- tag and, escaped,
    # for the HTML's -name_html- tag
    first = bodies[0]
    assert first["personalizations"][0] == {
        "to": [{"email": "student1@example.edu", "name": "Student 1"}],
        "substitutions": {"-name-": "Student 1", "-name_html-": "Student 1"},
    }
    assert "Dear -name-, the school is closed today." in first["content"][0]["value"]
    assert "Dear -name_html-, the school is closed today." in first["content"][1]["value"]
    assert first["custom_args"] == {"message_id": message_id, "batch": "0"}
    assert first["categories"] == ["emergency_alert", "bulk"]
    # When the same bulk job is sent again (a retry or a resend with the same key)
    worker_client.send("notifications.send_bulk_email", payload, idempotency_key="closure:2026-11-23")
    # Then no batch goes out twice
    wait_until(lambda: depth(edujobs_env["EDUJOBS_RABBITMQ_URL"], "notifications") == 0)
    time.sleep(1.5)
    assert len(fake_sendgrid.requests) == 10
