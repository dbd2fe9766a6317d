"""End to end: a job's error, as ``GET /v1/jobs/{id}`` and ``edujobs jobs show`` give it, keeps the
phone number Twilio quoted in it out of sight unless an operator reveals it, and every reveal is in
the audit log. The error comes from a real worker and the fake Twilio refusing the number."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time as clock_time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from brokers.client import Client
from ops.api import create_app
from ops.cli import app as cli
from store import audit, tokens
from store.db import make_engine
from store.jobs import JobStore
from store.models import User
from tests.fakes import twilio
from tests.fakes.twilio import FakeTwilio
from tests.worker import wait_until

NUMBER = "+33612345678"


@pytest.fixture
def engine(edujobs_env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(edujobs_env["EDUJOBS_DATABASE_URL"])
    with Session(engine) as session:
        session.add(
            User(
                id=1, phone=NUMBER, name="Ada Lovelace", role="student",
                quiet_hours_start=clock_time(0, 0), quiet_hours_end=clock_time(0, 0),
            )
        )  # fmt: skip
        session.commit()
    yield engine
    engine.dispose()


def test_a_jobs_error_shows_no_phone_number_unless_revealed_and_audited(
    worker_client: Client, fake_twilio: FakeTwilio, edujobs_env: dict[str, str], engine: Engine
) -> None:
    # Given an SMS whose number Twilio refuses, quoting it in its error
    fake_twilio.queue(twilio.invalid_number(NUMBER))
    message_id = worker_client.send("notifications.send_sms", {"user_id": 1, "template": "welcome"})
    jobs = JobStore(engine)
    wait_until(lambda: (job := jobs.get(message_id)) is not None and job.state == "dead", what="dead job")
    recorded = jobs.get(message_id)
    assert recorded is not None and NUMBER in (recorded.error or "")  # the record keeps what happened
    reader = {
        "Authorization": "Bearer " + tokens.create(engine, name="dash", scopes=["ops:read"], created_by="t")
    }
    writer = {
        "Authorization": "Bearer "
        + tokens.create(engine, name="oncall", scopes=["ops:write"], created_by="t")
    }
    url = edujobs_env["EDUJOBS_RABBITMQ_URL"]
    with TestClient(create_app(rabbitmq_url=url, engine=engine, client=worker_client)) as api:
        # When a dashboard (ops:read) reads the job
        shown = api.get(f"/v1/jobs/{message_id}", headers=reader).json()
        # Then the error says what went wrong without the number
        assert "is not a valid phone number" in shown["error"] and NUMBER not in shown["error"]
        assert NUMBER[1:] not in str(shown) and shown["revealed"] is False
        # And revealing it takes ops:write, and is audited under the token's name
        assert api.get(f"/v1/jobs/{message_id}?reveal=true", headers=reader).status_code == 403
        revealed = api.get(f"/v1/jobs/{message_id}?reveal=true", headers=writer).json()
    assert NUMBER in revealed["error"] and revealed["revealed"] is True
    [entry] = audit.recent(engine, action="jobs.reveal")
    assert (entry.actor, entry.target) == ("token:oncall", message_id)
    # The CLI likewise: redacted by default, revealed with --reveal (audited under --as)
    runner = CliRunner()
    plain = runner.invoke(cli, ["jobs", "show", message_id, "--json"])
    assert plain.exit_code == 0, plain.output
    assert NUMBER not in plain.stdout and "is not a valid phone number" in plain.stdout
    shown_all = runner.invoke(cli, ["jobs", "show", message_id, "--reveal", "--as", "alice", "--json"])
    assert shown_all.exit_code == 0 and NUMBER in shown_all.stdout
    assert [e.actor for e in audit.recent(engine, action="jobs.reveal")] == ["alice", "token:oncall"]
