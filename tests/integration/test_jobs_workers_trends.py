"""Job search, workers and trends over HTTP (FastAPI's TestClient) on the real RabbitMQ and
PostgreSQL: a service sees the jobs it enqueued and no others, pages never skip or repeat a job,
heartbeats show workers alive / stale / stopped, trends count what job state and samples say."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from middleware.job_state import JobUpdate
from store.job_batch import BatchJobRecorder
from store.jobs import JobStore
from store.models import JobRecord
from store.types import utcnow
from store.workers import HeartbeatRecorder, WorkerHeartbeat
from tests.amqp import take
from tests.integration.test_api import api, bearer  # noqa: F401  (fixture)
from tests.integration.test_dlq import engine, topology  # noqa: F401  (fixtures)

KEY = b"test-signing-key"


def email(user_id: int) -> dict[str, object]:
    return {"actor": "notifications.send_email", "payload": {"user_id": user_id, "template": "welcome"}}


def test_a_service_sees_the_jobs_it_enqueued_and_an_operator_sees_all(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    # Given two services that enqueue for the same user, and a job a worker recorded first
    lms = bearer(engine, "lms", "enqueue:notifications")
    crm = bearer(engine, "crm", "enqueue:notifications")
    ops = bearer(engine, "oncall", "ops:read")
    mine = api.post("/v1/messages:batch", json={"messages": [email(7), email(7), email(8)]}, headers=lms)
    assert mine.status_code == 202
    theirs = api.post("/v1/messages", json=email(7), headers=crm).json()["message_id"]
    take(topology, "notifications", 4)
    error = "Twilio: the 'To' number +33612345678 is not valid"
    sms = JobUpdate("from-node", "dead", time.time(), "notifications.send_sms", "notifications", error=error)
    BatchJobRecorder(engine).apply([sms])
    ids = [m["message_id"] for m in mine.json()["messages"]]
    # When the LMS lists user 7's jobs, it sees its own two, newest first, and not the CRM's
    listed = api.get("/v1/jobs", params={"user_id": 7}, headers=lms)
    assert listed.status_code == 200
    # (one batch's jobs share their time; within it the order is by id)
    assert sorted(j["message_id"] for j in listed.json()["jobs"]) == sorted(ids[:2])
    assert all(j["enqueued_by"] == "token:lms" and j["user_id"] == 7 for j in listed.json()["jobs"])
    # And an operator sees every job of user 7, the CRM's included
    everyone = api.get("/v1/jobs", params={"user_id": 7}, headers=ops).json()["jobs"]
    assert {j["message_id"] for j in everyone} == {ids[0], ids[1], theirs}
    # Filters by actor and state; the dead job's error is redacted as in GET /v1/jobs/{id}
    [dead] = api.get("/v1/jobs", params={"state": "dead"}, headers=ops).json()["jobs"]
    assert dead["message_id"] == "from-node" and "+33612345678" not in dead["error"]
    by_actor = api.get("/v1/jobs", params={"actor": "notifications.send_sms"}, headers=lms).json()["jobs"]
    assert by_actor == []  # not the LMS's
    # Bad input is refused naming the field
    bad_state = api.get("/v1/jobs", params={"state": "lost"}, headers=ops)
    assert bad_state.status_code == 422 and "state" in bad_state.text
    bad_cursor = api.get("/v1/jobs", params={"cursor": "nonsense"}, headers=ops)
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.text
    naive = api.get("/v1/jobs", params={"since": "2026-12-03T10:00:00"}, headers=ops)
    assert naive.status_code == 422 and "since" in naive.text
    # (a user id past the database's integer was a 500 from PostgreSQL, found by schemathesis)
    huge = api.get("/v1/jobs", params={"user_id": 2**31}, headers=ops)
    assert huge.status_code == 422 and "user_id" in huge.text
    assert api.get("/v1/reports/2147483648", headers=ops).status_code == 422
    assert api.get("/v1/jobs").status_code == 401


def test_pages_never_skip_or_repeat_a_job_while_jobs_are_added_and_change(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> None:
    # Given 25 jobs of a user, recorded one after another
    jobs = JobStore(engine)
    for i in range(25):
        jobs.record_enqueued(f"job-{i:02d}", "reports.generate_report", "reports", user_id=3)
    ops = bearer(engine, "oncall", "ops:read")
    # When an operator pages through them 10 at a time while new jobs arrive and old ones finish
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"user_id": 3, "limit": 10, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/jobs", params=params, headers=ops).json()
        seen += [j["message_id"] for j in page["jobs"]]
        jobs.record_enqueued(f"later-{len(seen)}", "reports.generate_report", "reports", user_id=3)
        jobs.mark_succeeded(seen[-1])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Then every job recorded before the first page is listed once, newest first
    assert seen == [f"job-{i:02d}" for i in reversed(range(25))]
    # And ``since`` keeps only the jobs recorded from then on
    with engine.begin() as connection:
        old = utcnow() - timedelta(days=2)
        connection.execute(update(JobRecord).where(JobRecord.message_id < "job-05").values(created_at=old))
    since = (utcnow() - timedelta(days=1)).isoformat()
    recent = api.get("/v1/jobs", params={"user_id": 3, "since": since, "limit": 500}, headers=ops).json()
    assert "job-04" not in {j["message_id"] for j in recent["jobs"]}
    assert "job-05" in {j["message_id"] for j in recent["jobs"]}


def test_workers_are_listed_alive_stale_or_stopped_and_old_ones_are_forgotten(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> None:
    recorder = HeartbeatRecorder(engine, forget_seconds=3600)
    now = utcnow()

    def beat(worker: str, pid: int) -> None:
        recorder.beat({"id": worker, "host": "node-1", "pid": pid, "parent_pid": 1, "pool": "media",
                       "queues": ["media"], "threads": 8, "in_flight": 2, "processed": 40, "failed": 1,
                       "interval_seconds": 5.0, "started_at": now})  # fmt: skip

    # Given three workers that beat, one of which then stops cleanly and one goes silent
    for worker, pid in (("w-alive", 11), ("w-silent", 12), ("w-stopped", 13), ("w-ancient", 14)):
        beat(worker, pid)
    recorder.stopped("w-stopped")
    with engine.begin() as connection:
        connection.execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.id == "w-silent")
            .values(beat_at=now - timedelta(seconds=16))
        )
        connection.execute(
            update(WorkerHeartbeat)
            .where(WorkerHeartbeat.id == "w-ancient")
            .values(beat_at=now - timedelta(hours=2))
        )
    # When another beat comes (it forgets workers silent past the forget window) and an operator asks
    beat("w-alive", 11)
    ops = bearer(engine, "oncall", "ops:read")
    listed = api.get("/v1/workers", headers=ops).json()
    # Then the silent one is flagged stale, the stopped one stopped, the ancient one is gone
    assert [(w["id"], w["status"]) for w in listed] == [
        ("w-alive", "alive"), ("w-silent", "stale"), ("w-stopped", "stopped")
    ]  # fmt: skip
    assert listed[0]["in_flight"] == 2 and listed[0]["processed"] == 40 and listed[0]["queues"] == ["media"]
    service = bearer(engine, "lms", "enqueue:notifications")
    assert api.get("/v1/workers", headers=service).status_code == 403


def test_trends_count_ended_attempts_failures_and_sampled_backlog_per_queue(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> None:
    # Given jobs that ended in the last minutes and a queue depth sample
    at = time.time()
    BatchJobRecorder(engine).apply([
        JobUpdate("ok-1", "succeeded", at, "notifications.send_email", "notifications"),
        JobUpdate("ok-2", "succeeded", at, "notifications.send_email", "notifications"),
        JobUpdate("bad-1", "dead", at, "media.transcode_video", "media", error="corrupt"),
        JobUpdate("retry-1", "failed", at, "media.transcode_video", "media", error="timeout"),
        JobUpdate("waiting", "enqueued", at, "reports.generate_report", "reports"),
    ])  # fmt: skip
    HeartbeatRecorder(engine).sample({"media": (12, 3), "notifications": (0, 0)})
    ops = bearer(engine, "oncall", "ops:read")
    # When an operator asks for the last hour
    trends = api.get("/v1/trends", params={"window": "1h"}, headers=ops).json()
    # Then each queue's series counts them in the last bucket(s), the backlog where it was sampled
    assert trends["bucket_seconds"] == 60 and len(trends["buckets"]) == 60
    media, notifications = trends["queues"]["media"], trends["queues"]["notifications"]
    assert sum(media["processed"]) == 2 and sum(media["failed"]) == 2
    assert sum(notifications["processed"]) == 2 and sum(notifications["failed"]) == 0
    assert [value for value in media["backlog"] if value is not None] == [15]
    assert "reports" not in trends["queues"]
    day = api.get("/v1/trends", params={"window": "24h"}, headers=ops).json()
    assert len(day["buckets"]) == 96 and sum(day["queues"]["media"]["processed"]) == 2
    wrong = api.get("/v1/trends", params={"window": "7d"}, headers=ops)
    assert wrong.status_code == 422 and "window" in wrong.text
