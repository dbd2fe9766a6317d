"""The store on SQLite: engine tuning, migrations, models, ledger, job state, audit and seed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from store import audit
from store.db import get_engine, make_engine, session_scope
from store.jobs import JobStore
from store.ledger import Claim, Ledger
from store.migrate import alembic_config, current, heads, target_metadata, upgrade
from store.models import (
    Attendance,
    AuditLog,
    Course,
    Delivery,
    Enrollment,
    Grade,
    Intervention,
    JobRecord,
    User,
)
from store.seed import AlreadySeededError, SeedError, seed

TODAY = date(2026, 3, 18)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/nested/dir/edujobs.db"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def add_user(engine: Engine, user_id: int = 1, **fields: object) -> None:
    with session_scope(engine) as session:
        session.add(User(**{"id": user_id, "name": f"User {user_id}", "role": "student", **fields}))


def count(engine: Engine, model: type[object]) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


# Engine and migrations


def test_a_sqlite_engine_creates_its_directory_and_uses_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    # Given a SQLite URL in a directory that does not exist
    url = f"sqlite:///{tmp_path}/a/b/edujobs.db"
    # When an engine connects
    engine = make_engine(url)
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        }
    engine.dispose()
    # Then the file exists and every connection is tuned
    assert (tmp_path / "a" / "b" / "edujobs.db").exists()
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000}


def test_only_an_engine_for_losable_writes_skips_syncing_each_commit(tmp_path: Path) -> None:
    # Given the default engine and one for job state (which may lose its last batch in a crash)
    url = f"sqlite:///{tmp_path}/edujobs.db"
    durable, losable = make_engine(url), make_engine(url, sync_each_commit=False)
    # When each connects
    levels = []
    for engine in (durable, losable):
        with engine.connect() as connection:
            levels.append(connection.exec_driver_sql("PRAGMA synchronous").scalar())
        engine.dispose()
    # Then the default syncs every commit (FULL = 2) and the other only at checkpoints (NORMAL = 1)
    assert levels == [2, 1]


def test_the_workers_middleware_engine_is_the_losable_one(tmp_path: Path) -> None:
    # Given the engine brokers.setup hands to the job-state, pause and cancellation middleware
    from brokers.stack import _engine

    engine = _engine(f"sqlite:///{tmp_path}/edujobs.db")
    # When it connects
    with engine.connect() as connection:
        level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    engine.dispose()
    # Then its commits (job state only) are synced at checkpoints
    assert level == 1


def test_get_engine_follows_the_configured_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given EDUJOBS_DATABASE_URL names a SQLite file
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", f"sqlite:///{tmp_path}/configured.db")
    # When the engine is asked for twice
    first, second = get_engine(), get_engine()
    # Then it is one engine, on that file
    assert first is second
    assert first.url.database == f"{tmp_path}/configured.db"


def test_upgrade_creates_exactly_the_schema_of_the_models(url: str) -> None:
    # Given a fresh database, never migrated
    assert current(url) == ()
    # When it is upgraded (twice: the second run has nothing to do)
    upgrade(url)
    upgrade(url)
    # Then it is at the head revision and the migrated schema matches the models
    assert current(url) == heads() != ()
    engine = make_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, target_metadata()) == []
    engine.dispose()


def test_downgrading_to_base_removes_every_table_and_upgrading_restores_them(
    engine: Engine, url: str
) -> None:
    # Given a migrated database
    # When it is downgraded to nothing, Then only Alembic's own table is left
    command.downgrade(alembic_config(url), "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]
    assert current(url) == ()
    # And upgrading again recreates the schema
    upgrade(url)
    assert set(inspect(engine).get_table_names()) == {*target_metadata().tables, "alembic_version"}


def test_session_scope_commits_on_success_and_rolls_back_on_error(engine: Engine) -> None:
    # Given a block that adds a user and succeeds, and one that adds a user and fails
    with session_scope(engine) as session:
        session.add(User(id=1, name="Kept", role="student"))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(User(id=2, name="Dropped", role="student"))
        session.flush()
        raise RuntimeError("boom")
    # Then only the first user is stored
    with Session(engine) as session:
        assert session.scalars(select(User.name)).all() == ["Kept"]


# Models


def test_a_new_user_gets_the_documented_defaults(engine: Engine) -> None:
    # Given a user created with a name and a role only
    add_user(engine, 1)
    # When it is read back
    with Session(engine) as session:
        user = session.get_one(User, 1)
    # Then channels, quiet hours, time zone and locale have their defaults
    assert user.channel_order == ["push", "sms", "email"]
    assert (user.push_tokens, user.opted_out) == ([], [])
    assert (user.quiet_hours_start, user.quiet_hours_end) == (time(21, 0), time(7, 0))
    assert (user.time_zone, user.locale) == ("UTC", "en")
    assert user.created_at.tzinfo is UTC


def test_rows_written_in_plain_sql_get_the_same_defaults_as_the_models(engine: Engine) -> None:
    # Given another service inserts a user with SQL, giving only the required columns
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, name, role, created_at) "
                "VALUES (7, 'Raw', 'parent', '2026-01-01 00:00:00.000000')"
            )
        )
    # When edujobs reads it
    with Session(engine) as session:
        user = session.get_one(User, 7)
    # Then the database filled in the same defaults
    assert user.channel_order == ["push", "sms", "email"]
    assert user.quiet_hours_start == time(21, 0) and user.time_zone == "UTC"
    assert user.created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_timestamps_are_stored_in_utc_and_come_back_aware(engine: Engine) -> None:
    # Given a user last active at 09:30 in Paris (08:30 UTC in winter)
    paris = datetime(2026, 1, 15, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))
    add_user(engine, 1, last_active_at=paris)
    # When it is read back
    with Session(engine) as session:
        stored = session.get_one(User, 1).last_active_at
    # Then it is the same instant, in UTC
    assert stored == paris
    assert stored is not None and stored.tzinfo is UTC and stored.hour == 8


def test_a_naive_datetime_is_refused(engine: Engine) -> None:
    # Given a naive datetime (no time zone)
    # When it is stored, Then it is refused rather than guessed at
    with pytest.raises(StatementError, match="naive datetime"):
        add_user(engine, 1, last_active_at=datetime(2026, 1, 15, 9, 30))


def test_constraints_guard_roles_and_references(engine: Engine) -> None:
    # Given an unknown role, and an enrollment in a course that does not exist
    # When they are stored, Then the database refuses both
    with pytest.raises(IntegrityError):
        add_user(engine, 1, role="teacher")
    add_user(engine, 2)
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Enrollment(user_id=2, course_id=999))


def test_one_intervention_per_user_and_reason_is_open_at_a_time(engine: Engine) -> None:
    # Given a student with an open attendance intervention
    add_user(engine, 1)
    with session_scope(engine) as session:
        session.add(Intervention(user_id=1, tier=2, reason="attendance"))
    # When detection opens the same one again, Then the database refuses it
    with pytest.raises(IntegrityError, match="UNIQUE"), session_scope(engine) as session:
        session.add(Intervention(user_id=1, tier=2, reason="attendance"))
    # And once it is closed, a new one may open, as may one for another reason
    with session_scope(engine) as session:
        session.execute(update(Intervention).values(status="closed", closed_at=datetime.now(UTC)))
        session.add(Intervention(user_id=1, tier=2, reason="attendance"))
        session.add(Intervention(user_id=1, tier=1, reason="grades"))
    assert count(engine, Intervention) == 3


# Ledger


def test_the_first_claim_acquires_and_a_concurrent_one_is_told_it_is_pending(engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given a worker claimed a delivery
    first = ledger.claim("welcome:1", channel="email", actor_name="a", message_id="m1", user_id=1)
    # When another attempt claims it while the first is still sending
    second = ledger.claim("welcome:1", channel="email", actor_name="a", message_id="m2", user_id=1)
    # Then the first may send, the second may not, and one pending row exists
    assert first == Claim(True, "pending")
    assert second == Claim(False, "pending")
    delivery = ledger.get("welcome:1", "email")
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.message_id) == ("pending", 1, "m1")
    assert delivery.claimed_at.tzinfo is UTC


def test_a_completed_delivery_is_never_claimed_again(engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given a delivery that was sent
    sent = ledger.claim("welcome:1", channel="email", actor_name="a", message_id="m1")
    ledger.begin(sent)
    ledger.complete(sent, provider_message_id="sg-123")
    # When a redelivered message claims it again
    claim = ledger.claim("welcome:1", channel="email", actor_name="a", message_id="m1")
    # Then it is not acquired and learns the earlier provider message id
    assert claim == Claim(False, "sent", "sg-123")
    delivery = ledger.get("welcome:1", "email")
    assert delivery is not None and delivery.status == "sent" and delivery.completed_at is not None


def test_a_released_delivery_can_be_claimed_by_a_retry(engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given an attempt that failed without sending and released its claim
    ledger.release(
        ledger.claim("sms:9", channel="sms", actor_name="a", message_id="m1"),
        error="ProviderUnavailableError: 503",
    )
    assert (
        delivery := ledger.get("sms:9", "sms")
    ) is not None and delivery.error == "ProviderUnavailableError: 503"
    # When the retry claims it
    claim = ledger.claim("sms:9", channel="sms", actor_name="a", message_id="m1")
    # Then it is acquired, as a second attempt, with the error cleared once sent
    assert claim.acquired
    ledger.complete(claim, provider_message_id="SM1")
    delivery = ledger.get("sms:9", "sms")
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 2, None)


def test_a_claim_older_than_its_lease_is_taken_over(engine: Engine) -> None:
    ledger = Ledger(engine, lease_seconds=60)
    # Given a claim made 2 minutes ago whose thread hangs before sending (its worker still beats)
    ledger.claim("push:3", channel="push", actor_name="a", message_id="m1")
    with engine.begin() as connection:
        connection.execute(update(Delivery).values(claimed_at=datetime.now(UTC) - timedelta(minutes=2)))
    # When another attempt claims it
    claim = ledger.claim("push:3", channel="push", actor_name="a", message_id="m2")
    # Then it takes it over
    assert claim.acquired
    delivery = ledger.get("push:3", "push")
    assert delivery is not None and (delivery.attempts, delivery.message_id) == (2, "m2")


def test_completing_needs_the_claim_and_a_finished_status(engine: Engine) -> None:
    ledger = Ledger(engine)
    never = Claim(True, "pending", key="never-claimed", channel="email", token="0" * 32)
    assert not ledger.complete(never, provider_message_id=None)
    claim = ledger.claim("k", channel="email", actor_name="a", message_id="m")
    with pytest.raises(ValueError, match="finished"):
        ledger.complete(claim, provider_message_id=None, status="failed")


def test_threads_claiming_one_key_on_sqlite_acquire_it_once(engine: Engine) -> None:
    ledger = Ledger(engine)
    barrier = threading.Barrier(8)
    claims: list[Claim] = []

    def claim() -> None:
        barrier.wait()
        claims.append(ledger.claim("grade:5", channel="email", actor_name="a", message_id="m"))

    # Given 8 threads claiming the same key at once
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one acquired it
    assert sorted(c.acquired for c in claims) == [False] * 7 + [True]
    assert count(engine, Delivery) == 1


# Job state


def test_a_job_goes_from_enqueued_to_succeeded_with_progress(engine: Engine) -> None:
    jobs = JobStore(engine)
    # Given a message sent for user 7
    jobs.record_enqueued("m1", "reports.generate_report", "reports", user_id=7)
    # When a worker runs it, reports progress and finishes
    jobs.mark_running("m1", attempts=1)
    jobs.set_progress("m1", 40)
    running = jobs.get("m1")
    jobs.mark_succeeded("m1", {"rows": 120, "uri": "file:var/storage/r.pdf"})
    # Then each step is recorded with its timestamps
    assert running is not None and (running.state, running.progress) == ("running", 40)
    job = jobs.get("m1")
    assert job is not None
    assert (job.state, job.progress, job.attempts, job.user_id) == ("succeeded", 100, 1, 7)
    assert job.result_summary == {"rows": 120, "uri": "file:var/storage/r.pdf"}
    assert job.enqueued_at and job.started_at and job.finished_at
    assert job.enqueued_at <= job.started_at <= job.finished_at


def test_a_worker_records_a_message_whose_enqueueing_was_never_seen(engine: Engine) -> None:
    jobs = JobStore(engine)
    # Given a message published by another service (never recorded as enqueued)
    # When a worker starts it, and the producer's record arrives late
    jobs.mark_running("m2", attempts=1, actor_name="notifications.send_email", queue="notifications")
    jobs.record_enqueued("m2", "notifications.send_email", "notifications", user_id=3)
    # Then the job is running (the late record did not move it back) and knows its user
    job = jobs.get("m2")
    assert job is not None
    assert (job.state, job.actor_name, job.queue, job.user_id) == (
        "running",
        "notifications.send_email",
        "notifications",
        3,
    )


def test_failures_retries_and_dead_letters_are_recorded(engine: Engine) -> None:
    jobs = JobStore(engine)
    jobs.record_enqueued("m3", "media.transcode_video", "media")
    # Given an attempt failed and the retry started
    jobs.mark_running("m3", attempts=1)
    jobs.set_progress("m3", 70)
    jobs.set_progress("m3", 150)
    jobs.set_progress("m3", 10)
    progress = jobs.get("m3")
    jobs.mark_failed("m3", "ProviderUnavailableError: storage 503", attempts=1)
    failed = jobs.get("m3")
    jobs.mark_running("m3", attempts=2)
    # When the retry fails for good
    jobs.mark_dead("m3", "PermanentError: corrupt media")
    # Then progress was clamped and never went back, and each state was recorded
    assert progress is not None and progress.progress == 100
    assert failed is not None and (failed.state, failed.error) == (
        "failed",
        "ProviderUnavailableError: storage 503",
    )
    job = jobs.get("m3")
    assert job is not None and (job.state, job.attempts, job.error) == (
        "dead",
        2,
        "PermanentError: corrupt media",
    )


def test_a_cancelled_job_stays_cancelled(engine: Engine) -> None:
    jobs = JobStore(engine)
    # Given an operator cancelled a queued job
    jobs.record_enqueued("m4", "reports.generate_report", "reports")
    jobs.mark_cancelled("m4", "requested by operator")
    # When a worker receives it anyway
    jobs.mark_running("m4", attempts=1)
    jobs.mark_succeeded("m4")
    # Then it is still cancelled
    job = jobs.get("m4")
    assert job is not None and (job.state, job.error) == ("cancelled", "requested by operator")


def test_a_users_jobs_are_listed_latest_first(engine: Engine) -> None:
    jobs = JobStore(engine)
    # Given three jobs of user 5 and one of user 6
    for message_id in ("a", "b", "c"):
        jobs.record_enqueued(message_id, "reports.generate_report", "reports", user_id=5)
    jobs.record_enqueued("other", "reports.generate_report", "reports", user_id=6)
    jobs.mark_running("a", attempts=1)
    # When user 5's two latest jobs are listed
    listed = jobs.list_for_user(5, limit=2)
    # Then they are the last updated ones, newest first
    assert [job.message_id for job in listed] == ["a", "c"]
    assert count(engine, JobRecord) == 4


# Audit


def test_operator_actions_are_recorded_newest_first(engine: Engine) -> None:
    # Given two operator actions
    audit.record(
        engine, actor="ops:alice", action="dlq.requeue", target="notifications.XQ", details={"count": 3}
    )
    audit.record(engine, actor="ops:bob", action="dlq.purge", target="media.XQ", details={"dry_run": False})
    # When the audit trail is read
    entries = audit.recent(engine, limit=10)
    # Then both are there, newest first, with their details
    assert [(e.actor, e.action, e.target, e.details) for e in entries] == [
        ("ops:bob", "dlq.purge", "media.XQ", {"dry_run": False}),
        ("ops:alice", "dlq.requeue", "notifications.XQ", {"count": 3}),
    ]
    assert [e.action for e in audit.recent(engine, action="dlq.requeue")] == ["dlq.requeue"]
    assert count(engine, AuditLog) == 2


# Seed


def test_seed_writes_students_in_courses_with_grades_and_attendance(engine: Engine) -> None:
    # Given an empty, migrated database
    # When 120 students are seeded
    summary = seed(engine, students=120, seed=7, today=TODAY)
    # Then the data has the documented shape
    assert (summary.students, summary.instructors, summary.courses) == (120, 2, 4)
    assert summary.enrollments == 360 and count(engine, Enrollment) == 360
    assert summary.attendance == 360 * 30 == count(engine, Attendance)
    assert summary.grades == 360 * 2 == count(engine, Grade)
    with Session(engine) as session:
        student = session.get_one(User, 1)
        assert (student.email, student.role, student.phone) == (
            "student1@example.edu",
            "student",
            "+15550000001",
        )
        per_student = session.execute(
            select(func.count()).select_from(Enrollment).group_by(Enrollment.user_id)
        ).scalars()
        assert set(per_student) == {3}
        days = session.scalars(select(Attendance.day).distinct().order_by(Attendance.day)).all()
        assert len(days) == 30 and max(days) < TODAY and all(day.weekday() < 5 for day in days)
        statuses = set(session.scalars(select(Attendance.status).distinct()))
        assert {"present", "absent", "late"} <= statuses
        assert (
            session.scalar(select(func.count()).select_from(Course).where(Course.instructor_id.is_(None)))
            == 0
        )
    # And new rows still get fresh ids after the explicit ones
    add_user(engine, 10_000)


def test_seed_is_deterministic(tmp_path: Path) -> None:
    # Given two fresh databases
    contents = []
    for name in ("one", "two"):
        url = f"sqlite:///{tmp_path}/{name}.db"
        upgrade(url)
        engine = make_engine(url)
        # When both are seeded with the same seed on the same day
        seed(engine, students=60, seed=3, today=TODAY)
        with Session(engine) as session:
            contents.append(
                (
                    session.execute(select(User.name, User.time_zone).order_by(User.id)).all(),
                    session.execute(
                        select(
                            Attendance.user_id, Attendance.course_id, Attendance.day, Attendance.status
                        ).order_by(Attendance.user_id, Attendance.course_id, Attendance.day)
                    ).all(),
                    session.execute(select(Grade.user_id, Grade.points).order_by(Grade.id)).all(),
                )
            )
        engine.dispose()
    # Then they hold the same data
    assert contents[0] == contents[1]


def test_seeding_twice_is_refused_and_changes_nothing(engine: Engine) -> None:
    # Given a seeded database
    seed(engine, students=30, today=TODAY)
    users = count(engine, User)
    # When it is seeded again
    with pytest.raises(AlreadySeededError, match="already seeded"):
        seed(engine, students=30, today=TODAY)
    # Then nothing changed
    assert count(engine, User) == users


def test_seeding_an_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(SeedError, match="db upgrade"):
        seed(engine, students=10)
    engine.dispose()
