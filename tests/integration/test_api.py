"""The HTTP API over HTTP (FastAPI's TestClient) on the real RabbitMQ and PostgreSQL: enqueue,
dead-letter review and actions, health, and bearer tokens with scopes (401 / 403)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from brokers.client import Client
from ops.api import create_app
from schedules.crontab import CRONTAB
from store import audit, tokens
from store.jobs import JobStore
from tests.amqp import depth, take
from tests.integration.test_dlq import dead_letter, engine, topology  # noqa: F401  (fixtures)
from tests.worker import wait_until

KEY = b"test-signing-key"
MANAGEMENT = "http://guest:guest@127.0.0.1:15672"


@pytest.fixture
def api(topology: str, engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    client = Client(topology, signing_key=KEY)
    app = create_app(rabbitmq_url=topology, engine=engine, client=client, management_url=MANAGEMENT)
    with TestClient(app) as http:
        yield http
    client.close()


def bearer(engine: Engine, name: str, *scopes: str) -> dict[str, str]:  # noqa: F811
    return {
        "Authorization": "Bearer " + tokens.create(engine, name=name, scopes=list(scopes), created_by="test")
    }


EMAIL = {"actor": "notifications.send_email", "payload": {"user_id": 7, "template": "welcome"}}


def test_without_a_valid_token_every_v1_endpoint_is_401(api: TestClient, engine: Engine) -> None:  # noqa: F811
    assert api.get("/v1/dlq").status_code == 401
    assert api.post("/v1/messages", json=EMAIL).status_code == 401
    assert api.get("/v1/dlq", headers={"Authorization": "Bearer ej_nope"}).status_code == 401
    headers = bearer(engine, "revoked", "ops:read")
    assert api.get("/v1/dlq", headers=headers).status_code == 200
    tokens.revoke(engine, name="revoked", revoked_by="test")
    assert api.get("/v1/dlq", headers=headers).status_code == 401
    # Only the hash is stored
    [stored] = tokens.list_tokens(engine)
    assert stored.token_hash == tokens.hash_token(headers["Authorization"].split()[1])


def test_enqueue_needs_the_queue_scope_and_returns_202_with_the_id(
    api: TestClient,
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    reports_only = bearer(engine, "reports", "enqueue:reports")
    assert api.post("/v1/messages", json=EMAIL, headers=reports_only).status_code == 403
    sender = bearer(engine, "lms", "enqueue:notifications")
    response = api.post("/v1/messages", json={**EMAIL, "idempotency_key": "k1"}, headers=sender)
    assert response.status_code == 202
    message_id = response.json()["message_id"]
    [received] = take(topology, "notifications", 1)
    assert received.message()["message_id"] == message_id
    # An invalid payload is refused with what is wrong, and nothing is published
    bad = {"actor": "notifications.send_email", "payload": {"user_id": -1, "template": "welcome"}}
    batch = api.post("/v1/messages:batch", json={"messages": [EMAIL, bad]}, headers=sender)
    assert batch.status_code == 422 and "user_id" in batch.text
    assert depth(topology, "notifications") == 0
    batch = api.post("/v1/messages:batch", json={"messages": [EMAIL, EMAIL]}, headers=sender)
    assert batch.status_code == 202 and len(batch.json()["messages"]) == 2
    assert depth(topology, "notifications") == 2
    assert api.post("/v1/messages", json={**EMAIL, "actor": "nope.x"}, headers=sender).status_code == 422


def test_dead_letters_are_reviewed_with_ops_read_and_requeued_with_ops_write(
    api: TestClient,
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    sent = [
        dead_letter(topology, "testing.fail_permanently", {"user_id": i, "email": "a@b.io"}) for i in range(2)
    ]
    reader = bearer(engine, "dashboard", "ops:read")
    writer = bearer(engine, "oncall", "ops:write")
    stats = api.get("/v1/dlq", headers=reader).json()
    assert {s["queue"]: s["count"] for s in stats}["maintenance"] == 2
    listed = api.get("/v1/dlq/maintenance", headers=reader).json()
    assert [x["id"] for x in listed] == [m["message_id"] for m in sent]
    shown = api.get(f"/v1/dlq/maintenance/{sent[0]['message_id']}", headers=reader).json()
    assert shown["kwargs"]["email"] == "[redacted]"
    assert (
        api.get(f"/v1/dlq/maintenance/{sent[0]['message_id']}?reveal=true", headers=reader).status_code == 403
    )
    assert api.get("/v1/dlq/maintenance/missing", headers=reader).status_code == 404
    assert api.get("/v1/dlq/nope", headers=reader).status_code == 422
    # Actions need ops:write
    one = {"ids": [sent[0]["message_id"]]}
    assert api.post("/v1/dlq/maintenance/requeue", json=one, headers=reader).status_code == 403
    assert api.post("/v1/dlq/maintenance/requeue", json={}, headers=writer).status_code == 422
    done = api.post("/v1/dlq/maintenance/requeue", json=one, headers=writer)
    assert done.status_code == 200 and done.json()["count"] == 1
    assert take(topology, "maintenance", 1)[0].message()["message_id"] == sent[0]["message_id"]
    purged = api.post("/v1/dlq/maintenance/purge", json={}, headers=writer).json()
    assert purged["ids"] == [sent[1]["message_id"]]
    assert depth(topology, "maintenance.XQ") == 0
    actions = {(e.action, e.actor) for e in audit.recent(engine)}
    assert {("dlq.requeue", "token:oncall"), ("dlq.purge", "token:oncall")} <= actions


def test_health_and_readiness_and_jobs(api: TestClient, engine: Engine) -> None:  # noqa: F811
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"rabbitmq": "ok", "database": "ok"}
    reader = bearer(engine, "dashboard", "ops:read")
    assert api.get("/v1/jobs/unknown", headers=reader).status_code == 404
    assert api.get("/openapi.json").status_code == 200


def test_queues_are_listed_with_ops_read_and_paused_and_resumed_with_ops_write(
    api: TestClient,
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    # Given two messages waiting in the media queue
    client = Client(topology, signing_key=KEY)
    for n in range(2):
        client.send("media.process_video", {"asset_id": n + 1})
    client.close()
    reader, writer = bearer(engine, "dashboard", "ops:read"), bearer(engine, "oncall", "ops:write")

    def media() -> dict[str, object]:
        listing = api.get("/v1/queues", headers=reader)
        assert listing.status_code == 200, listing.text
        [row] = [row for row in listing.json() if row["queue"] == "media"]
        return dict(row)

    # RabbitMQ's management API refreshes its figures every few seconds, and not all at once: a
    # queue's row can show its messages before its consumer count
    wait_until(lambda: (row := media())["ready"] == 2 and row["consumers"] is not None, timeout=15)
    assert media()["paused"] is False and media()["consumers"] == 0
    # Pausing needs ops:write, names a known queue, and is audited under the token's name
    assert api.post("/v1/queues/media/pause", headers=reader).status_code == 403
    assert api.post("/v1/queues/nope/pause", headers=writer).status_code == 404
    paused = api.post("/v1/queues/media/pause", json={"reason": "ffmpeg upgrade"}, headers=writer)
    assert paused.json() == {"queue": "media", "paused": True, "changed": True}
    assert api.post("/v1/queues/media/pause", headers=writer).json()["changed"] is False
    row = media()
    assert (
        row["paused"] is True
        and row["paused_by"] == "token:oncall"
        and row["pause_reason"] == "ffmpeg upgrade"
    )
    assert api.post("/v1/queues/media/resume", headers=writer).json()["changed"] is True
    assert media()["paused"] is False
    actions = [(e.action, e.target, e.actor) for e in audit.recent(engine)]
    assert ("queue.pause", "media", "token:oncall") in actions
    assert ("queue.resume", "media", "token:oncall") in actions


def test_a_job_is_cancelled_with_ops_write_unless_it_finished(api: TestClient, engine: Engine) -> None:  # noqa: F811
    writer = bearer(engine, "oncall", "ops:write")
    assert api.post("/v1/jobs/m-queued/cancel", headers=bearer(engine, "r", "ops:read")).status_code == 403
    # A queued job no worker has seen yet is recorded as cancelled, so the worker that takes it skips it
    JobStore(engine).record_enqueued("m-queued", "notifications.send_email", "notifications")
    cancelled = api.post("/v1/jobs/m-queued/cancel", json={"reason": "sent twice"}, headers=writer)
    assert cancelled.json() == {"message_id": "m-queued", "state": "cancelled"}
    job = api.get("/v1/jobs/m-queued", headers=writer).json()
    assert job["state"] == "cancelled" and job["error"] == "sent twice"
    # An id with no job recorded is refused (a typo), unless the caller says its producer records none
    unknown = api.post("/v1/jobs/m-typo/cancel", headers=writer)
    assert unknown.status_code == 404 and "unrecorded" in unknown.json()["detail"]
    assert api.get("/v1/jobs/m-typo", headers=writer).status_code == 404
    forced = api.post("/v1/jobs/m-other-producer/cancel", json={"unrecorded": True}, headers=writer)
    assert forced.json() == {"message_id": "m-other-producer", "state": "cancelled"}
    # A finished job cannot be
    JobStore(engine).mark_succeeded("m-done")
    refused = api.post("/v1/jobs/m-done/cancel", headers=writer)
    assert refused.status_code == 409 and "succeeded" in refused.json()["detail"]


def test_metrics_expose_the_requests_and_the_queue_depths(api: TestClient, engine: Engine) -> None:  # noqa: F811
    api.get("/v1/queues")
    text = api.get("/metrics").text
    assert 'edujobs_api_requests_total{route="/v1/queues",status="401"} 1.0' in text
    assert "edujobs_queue_stats_up 1.0" in text
    # The management API lists a new vhost's queues within its refresh interval (5 s), one by one
    wait_until(lambda: 'edujobs_queue_consumers{queue="media"} 0.0' in api.get("/metrics").text, timeout=15)
    wait_until(
        lambda: 'edujobs_queue_messages{kind="dead",queue="media"} 0.0' in api.get("/metrics").text,
        timeout=15,
    )


def test_an_oversized_request_is_refused_with_413(
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    client = Client(topology, signing_key=KEY)
    app = create_app(rabbitmq_url=topology, engine=engine, client=client, max_body_bytes=2048)
    with TestClient(app) as http:
        sender = bearer(engine, "lms", "enqueue:*")
        big = {"messages": [EMAIL] * 100}
        refused = http.post("/v1/messages:batch", json=big, headers=sender)
        assert refused.status_code == 413 and "2048-byte limit" in refused.json()["detail"]
        assert depth(topology, "notifications") == 0
    client.close()


def test_schedules_are_listed_created_and_removed_with_scopes(api: TestClient, engine: Engine) -> None:  # noqa: F811
    reader = bearer(engine, "dashboard", "ops:read")
    writer = bearer(engine, "oncall", "ops:write", "enqueue:notifications")
    listed = api.get("/v1/schedules", headers=reader)
    assert listed.status_code == 200
    names = [row["name"] for row in listed.json()]
    assert names == [schedule.name for schedule in CRONTAB]  # no run-time schedule yet
    one_off = {
        "name": "winter-announcement",
        "actor": "notifications.send_weekly_digests",
        "at": "2030-12-01T09:00:00",
        "timezone": "Europe/Paris",
    }
    assert api.post("/v1/schedules", json=one_off, headers=reader).status_code == 403
    ops_only = bearer(engine, "ops-only", "ops:write")
    assert api.post("/v1/schedules", json=one_off, headers=ops_only).status_code == 403  # lacks enqueue scope
    created = api.post("/v1/schedules", json=one_off, headers=writer)
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "winter-announcement", "next": ["2030-12-01T09:00:00+01:00"]}
    assert api.post("/v1/schedules", json=one_off, headers=writer).status_code == 409
    bad = api.post(
        "/v1/schedules", json={**one_off, "name": "x", "cron": "0 9 * *", "at": None}, headers=writer
    )
    assert bad.status_code == 422 and "has 4 fields" in bad.json()["detail"]
    rows = {row["name"]: row for row in api.get("/v1/schedules", headers=reader).json()}
    assert rows["winter-announcement"]["kind"] == "run-time"
    assert api.delete("/v1/schedules/winter-announcement", headers=writer).json()["removed"] is True
    assert api.delete("/v1/schedules/winter-announcement", headers=writer).status_code == 404
    actions = [(e.action, e.target) for e in audit.recent(engine)]
    assert ("schedule.add", "winter-announcement") in actions and (
        "schedule.remove",
        "winter-announcement",
    ) in actions
