"""Enqueueing through the HTTP API, ``edujobs send`` and a worker's ``enqueue`` records each job as
``enqueued`` at once (``jobs show`` finds it), and every API request is audited. On the real
RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from actors.base import enqueue
from ops.cli import app
from store import audit, tokens
from store.db import get_engine
from store.jobs import JobStore
from tests.amqp import take
from tests.integration.test_api import api  # noqa: F401  (fixture)
from tests.integration.test_dlq import engine, topology  # noqa: F401  (fixtures)
from tests.integration.test_ops_cancel_running import broker  # noqa: F401  (fixture)

KEY = b"test-signing-key"
runner = CliRunner()


@pytest.fixture
def sender(engine: Engine) -> dict[str, str]:  # noqa: F811
    token = tokens.create(engine, name="lms", scopes=["enqueue:*", "ops:read"], created_by="test")
    return {"Authorization": "Bearer " + token}


def email(user_id: int) -> dict[str, object]:
    return {"actor": "notifications.send_email", "payload": {"user_id": user_id, "template": "welcome"}}


def test_a_message_sent_through_the_api_is_a_job_at_once_and_the_request_is_audited(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
    sender: dict[str, str],
) -> None:
    # When a service sends one message
    sent = api.post("/v1/messages", json=email(7), headers=sender)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message_id"]
    # Then the job is known before any worker saw it, under its user
    job = api.get(f"/v1/jobs/{message_id}", headers=sender).json()
    assert (job["state"], job["actor"], job["queue"]) == (
        "enqueued",
        "notifications.send_email",
        "notifications",
    )
    assert [j.message_id for j in JobStore(engine).list_for_user(7)] == [message_id]
    # And the request is in the audit log under the token's name
    [entry] = audit.recent(engine, action="messages.enqueue")
    assert (entry.actor, entry.target) == ("token:lms", "notifications.send_email")
    assert entry.details == {
        "count": 1,
        "requested": 1,
        "actors": {"notifications.send_email": 1},
        "first_ids": [message_id],
    }


def test_a_batch_is_published_in_order_recorded_and_audited_once(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
    sender: dict[str, str],
) -> None:
    # Given a batch of 30 emails and one SMS in between, one of them with an idempotency key
    messages = [email(n) for n in range(1, 31)]
    messages.insert(
        10, {"actor": "notifications.send_sms", "payload": {"user_id": 99, "template": "welcome"}}
    )
    messages[0] = {**messages[0], "idempotency_key": "welcome:1"}
    # When it is sent
    response = api.post("/v1/messages:batch", json={"messages": messages}, headers=sender)
    assert response.status_code == 202, response.text
    accepted = response.json()["messages"]
    # Then the ids come back in the request's order, and every message is in the queue
    assert [a["actor"] for a in accepted] == [m["actor"] for m in messages]
    ids = [a["message_id"] for a in accepted]
    queued = {r.message()["message_id"]: r.message() for r in take(topology, "notifications", 31)}
    assert set(queued) == set(ids)
    assert queued[ids[10]]["kwargs"]["user_id"] == 99 and queued[ids[0]]["options"]["idempotency_key"]
    # And each is an enqueued job, with its user
    jobs = JobStore(engine)
    assert all((job := jobs.get(i)) is not None and job.state == "enqueued" for i in ids)
    assert [j.message_id for j in jobs.list_for_user(99)] == [ids[10]]
    # And the request is audited once, with the counts per actor and the first ids
    [entry] = audit.recent(engine, action="messages.enqueue")
    assert entry.target == "notifications.send_email,notifications.send_sms"
    assert entry.details["count"] == 31
    assert entry.details["actors"] == {"notifications.send_email": 30, "notifications.send_sms": 1}
    assert entry.details["first_ids"] == ids[:10]


def test_edujobs_send_records_the_job_so_jobs_show_and_cancel_find_it(
    topology: str,  # noqa: F811
    engine: Engine,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", topology)
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("EDUJOBS_SIGNING_KEY", KEY.decode())
    # When an operator sends a message
    sent = runner.invoke(
        app, ["send", "notifications.send_email", '{"user_id": 5, "template": "welcome"}', "--json"]
    )
    assert sent.exit_code == 0, sent.output
    message_id = json.loads(sent.stdout)["message_id"]
    # Then `jobs show` finds it straight away
    shown = runner.invoke(app, ["jobs", "show", message_id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["state"] == "enqueued"
    # And it can be cancelled while queued, but a mistyped id is refused and recorded nowhere
    assert runner.invoke(app, ["jobs", "cancel", message_id, "--json"]).exit_code == 0
    typo = runner.invoke(app, ["jobs", "cancel", message_id[:-1]])
    assert typo.exit_code == 1 and "no job" in typo.output and "--unrecorded" in typo.output
    assert JobStore(engine).get(message_id[:-1]) is None
    assert audit.recent(engine, action="job.cancel")[0].target == message_id


def test_a_worker_enqueueing_a_job_records_it(broker: StubBroker) -> None:  # noqa: F811
    # Given the worker's broker (a stub, with the real middleware) and its database
    broker.declare_queue("notifications")
    # When an actor enqueues a notification for user 12
    message_id = enqueue(
        "notifications.notify_user", {"user_id": 12, "template": "welcome"}, idempotency_key="k-12"
    )
    # Then the job is recorded as enqueued, under its user, before any worker takes it
    [job] = JobStore(get_engine()).list_for_user(12)
    assert (job.message_id, job.state, job.queue) == (message_id, "enqueued", "notifications")


def test_the_api_serves_its_spec_but_no_page_that_loads_from_a_cdn(api: TestClient) -> None:  # noqa: F811
    assert api.get("/openapi.json").status_code == 200
    assert api.get("/docs").status_code == 404
    assert api.get("/redoc").status_code == 404
