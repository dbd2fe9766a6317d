"""Job state recorded in batches on PostgreSQL and SQLite, as the worker's middleware does it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from middleware.job_state import JobState, JobUpdate
from store.db import make_engine
from store.job_batch import ROWS_PER_STATEMENT, BatchJobRecorder
from store.jobs import JobStore
from store.migrate import upgrade


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    upgrade(migrated_database_url)
    engine = make_engine(migrated_database_url)
    yield engine
    engine.dispose()


def update(message_id: str, state: str, **fields: Any) -> JobUpdate:
    return JobUpdate(
        message_id=message_id, state=state, at=time.time(), actor_name="a.b", queue="q", **fields
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def any_engine(request: pytest.FixtureRequest, engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """PostgreSQL, and SQLite, whose batches are written by a path of their own."""
    if request.param == "postgresql":
        yield engine
        return
    upgrade(f"sqlite:///{tmp_path}/jobs.db")
    sqlite_engine = make_engine(f"sqlite:///{tmp_path}/jobs.db")
    yield sqlite_engine
    sqlite_engine.dispose()


def test_a_batch_records_each_jobs_last_state(any_engine: Engine) -> None:
    # Given a job that ran and succeeded, and one whose attempt failed, in the same batch
    recorder = BatchJobRecorder(any_engine)
    started = update("m1", "running", attempts=1)
    succeeded = update("m1", "succeeded", result_summary={"sent": 3})
    recorder.apply(
        [
            started,
            update("m2", "running", attempts=1),
            succeeded,
            update("m2", "failed", attempts=1, error="TransientError: down"),
        ]
    )
    jobs = JobStore(any_engine)
    first, second = jobs.get("m1"), jobs.get("m2")
    # Then the times read back are the times recorded, aware, in UTC, to the microsecond
    assert first is not None and first.started_at is not None and first.finished_at is not None
    assert abs(first.started_at - datetime.fromtimestamp(started.at, UTC)) < timedelta(microseconds=2)
    assert abs(first.finished_at - datetime.fromtimestamp(succeeded.at, UTC)) < timedelta(microseconds=2)
    # Then each has its final state, with its times, attempts, result and error
    assert first is not None and second is not None
    assert (first.state, first.progress, first.result_summary, first.attempts) == (
        "succeeded",
        100,
        {"sent": 3},
        1,
    )
    assert first.started_at is not None and first.finished_at is not None
    assert (second.state, second.error) == ("failed", "TransientError: down")
    # When the second is retried and dead-lettered in a later batch
    recorder.apply([update("m2", "running", attempts=2), update("m2", "dead", attempts=2, error="gone")])
    second = jobs.get("m2")
    assert second is not None and (second.state, second.attempts, second.error) == ("dead", 2, "gone")


def test_a_batch_larger_than_one_statement_records_every_job(any_engine: Engine) -> None:
    # Given 600 jobs that ran and succeeded in one batch (more rows than one statement takes)
    recorder = BatchJobRecorder(any_engine)
    assert ROWS_PER_STATEMENT < 600
    changes = [update(f"m{n}", "running", attempts=1) for n in range(600)]
    changes += [update(f"m{n}", "succeeded", result_summary={"n": n}) for n in range(600)]
    # When it is written
    recorder.apply(changes)
    # Then every job is there with its own result, the last statement's included
    jobs = JobStore(any_engine)
    for n in (0, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, 599):
        job = jobs.get(f"m{n}")
        assert job is not None and (job.state, job.result_summary, job.attempts) == ("succeeded", {"n": n}, 1)


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_a_retry_starts_its_progress_from_zero(dialect: str, engine: Engine, tmp_path: Path) -> None:
    if dialect == "sqlite":
        upgrade(f"sqlite:///{tmp_path}/jobs.db")
        engine = make_engine(f"sqlite:///{tmp_path}/jobs.db")
    recorder, jobs = BatchJobRecorder(engine), JobStore(engine)
    # Given a first attempt that reached 60% and failed
    recorder.apply([update("m5", "running", attempts=1)])
    jobs.set_progress("m5", 60)
    recorder.apply([update("m5", "failed", attempts=1, error="TransientError: down")])
    # When the retry starts running
    recorder.apply([update("m5", "running", attempts=2)])
    # Then `jobs show` says 0%, not the first attempt's 60%
    job = jobs.get("m5")
    assert job is not None and (job.state, job.attempts, job.progress) == ("running", 2, 0)
    # And the retry's own progress shows as it comes
    jobs.set_progress("m5", 30)
    job = jobs.get("m5")
    assert job is not None and job.progress == 30
    # And a retry whose start is flushed in the same batch as the failure starts from 0 too
    jobs.set_progress("m5", 90)
    recorder.apply([update("m5", "failed", attempts=2), update("m5", "running", attempts=3)])
    job = jobs.get("m5")
    assert job is not None and (job.attempts, job.progress) == (3, 0)
    if dialect == "sqlite":
        engine.dispose()


def test_a_cancelled_job_is_not_overwritten(engine: Engine) -> None:
    jobs = JobStore(engine)
    jobs.record_enqueued("m3", "a.b", "q")
    jobs.mark_cancelled("m3", "operator")
    BatchJobRecorder(engine).apply([update("m3", "running", attempts=1)])
    job = jobs.get("m3")
    assert job is not None and job.state == "cancelled"


def test_the_middleware_flushes_on_its_own_thread(engine: Engine) -> None:
    # Given the job-state middleware with a short flush interval, started
    middleware = JobState(recorder=BatchJobRecorder(engine), flush_interval=0.05)
    middleware.start()
    try:
        middleware._updates.put(update("m4", "running", attempts=1))
        deadline = time.monotonic() + 5
        while JobStore(engine).get("m4") is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        middleware.stop()
    job = JobStore(engine).get("m4")
    assert job is not None and job.state == "running"
