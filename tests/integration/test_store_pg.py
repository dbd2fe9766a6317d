"""The store on a real PostgreSQL: migrations, race-safe ledger claims, upserts, COPY-based seed.

Each test gets its own database (``edujobs_test_<hex>``, created through the ``postgres`` database
with AUTOCOMMIT and dropped afterwards: ``tests.services.postgres_database``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.db import make_engine, session_scope
from store.jobs import JobStore
from store.ledger import Claim, Ledger
from store.migrate import current, heads, target_metadata, upgrade
from store.models import Attendance, Delivery, Grade, Intervention, User
from store.seed import AlreadySeededError, seed
from tests.services import postgres_database
from tests.threads import all_at_once

pytestmark = pytest.mark.integration

TODAY = date(2026, 3, 18)
T = TypeVar("T")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    upgrade(pg_url)
    engine = make_engine(pg_url, pool_size=10)
    yield engine
    engine.dispose()


def test_upgrade_creates_exactly_the_schema_of_the_models(pg_url: str) -> None:
    # Given a fresh PostgreSQL database
    assert current(pg_url) == ()
    # When it is upgraded
    upgrade(pg_url)
    # Then it is at head and `alembic check` would find nothing to change
    assert current(pg_url) == heads() != ()
    engine = make_engine(pg_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, target_metadata()) == []
        json_type = connection.execute(
            text(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_name = 'users' AND column_name = 'push_tokens'"
            )
        ).scalar()
    engine.dispose()
    assert json_type == "jsonb"


def test_eight_threads_claiming_one_key_acquire_it_once(engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given 8 workers handling redeliveries of the same message at the same moment
    # When each claims the delivery
    claims = all_at_once(
        8, lambda: ledger.claim("grade:17:42", channel="email", actor_name="a", message_id="m", user_id=42)
    )
    # Then exactly one may send; the others are told it is pending
    assert sorted(claims, key=lambda c: c.acquired) == [Claim(False, "pending")] * 7 + [
        Claim(True, "pending")
    ]
    with Session(engine) as session:
        [delivery] = session.scalars(select(Delivery)).all()
    assert (delivery.status, delivery.attempts, delivery.user_id) == ("pending", 1, 42)


def test_eight_threads_taking_over_an_expired_claim_take_it_once(engine: Engine) -> None:
    ledger = Ledger(engine, lease_seconds=60)
    # Given a claim whose worker died ten minutes ago
    ledger.claim("sms:5", channel="sms", actor_name="a", message_id="m1")
    with engine.begin() as connection:
        connection.execute(update(Delivery).values(claimed_at=datetime.now(UTC) - timedelta(minutes=10)))
    # When 8 retries claim it at once
    claims = all_at_once(8, lambda: ledger.claim("sms:5", channel="sms", actor_name="a", message_id="m2"))
    # Then one takes it over, as the second attempt
    assert sum(claim.acquired for claim in claims) == 1
    delivery = ledger.get("sms:5", "sms")
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 2)


def test_a_sent_delivery_stays_sent(engine: Engine) -> None:
    ledger = Ledger(engine)
    # Given a delivery claimed and completed
    claim = ledger.claim("push:1", channel="push", actor_name="a", message_id="m")
    ledger.begin(claim)
    ledger.complete(claim, provider_message_id="projects/x/messages/1")
    # When it is claimed again
    # Then it is not acquired, and the earlier provider id comes back
    assert ledger.claim("push:1", channel="push", actor_name="a", message_id="m") == Claim(
        False, "sent", "projects/x/messages/1"
    )


def test_job_state_upserts_on_postgresql(engine: Engine) -> None:
    jobs = JobStore(engine)
    # Given a message a worker sees first, then its late enqueue record, then success
    jobs.mark_running("m1", attempts=1, actor_name="reports.generate_report", queue="reports")
    jobs.record_enqueued("m1", "reports.generate_report", "reports", user_id=9)
    jobs.set_progress("m1", 55)
    jobs.mark_succeeded("m1", {"rows": 3})
    # And a cancelled one that a worker still receives
    jobs.record_enqueued("m2", "reports.generate_report", "reports", user_id=9)
    jobs.mark_cancelled("m2")
    jobs.mark_running("m2", attempts=1)
    # Then both ended where they should
    done, cancelled = jobs.get("m1"), jobs.get("m2")
    assert done is not None and (done.state, done.progress, done.user_id) == ("succeeded", 100, 9)
    assert done.result_summary == {"rows": 3} and done.finished_at is not None
    assert cancelled is not None and cancelled.state == "cancelled"
    assert {job.message_id for job in jobs.list_for_user(9)} == {"m1", "m2"}


def test_one_open_intervention_per_user_and_reason(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(User(id=1, name="Ada", role="student"))
        session.flush()
        session.add(Intervention(user_id=1, tier=2, reason="attendance"))
    # When a second one opens, Then PostgreSQL refuses it
    with (
        pytest.raises(IntegrityError, match="uq_interventions_open_user_id_reason"),
        session_scope(engine) as session,
    ):
        session.add(Intervention(user_id=1, tier=2, reason="attendance"))


def test_timestamps_come_back_aware_in_utc(engine: Engine) -> None:
    tokyo = datetime(2026, 4, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    with session_scope(engine) as session:
        session.add(User(id=1, name="Ada", role="student", last_active_at=tokyo))
    with Session(engine) as session:
        stored = session.get_one(User, 1).last_active_at
    assert stored == tokyo and stored is not None and stored.tzinfo is UTC


def test_seed_on_postgresql_matches_sqlite_and_refuses_a_second_run(engine: Engine, tmp_path: Path) -> None:
    # Given the same seed written into PostgreSQL (COPY) and SQLite (INSERT)
    summary = seed(engine, students=150, seed=11, today=TODAY)
    sqlite_url = f"sqlite:///{tmp_path}/seed.db"
    upgrade(sqlite_url)
    sqlite = make_engine(sqlite_url)
    assert seed(sqlite, students=150, seed=11, today=TODAY) == summary

    def contents(engine: Engine) -> tuple[object, ...]:
        with Session(engine) as session:
            return (
                session.execute(
                    select(User.id, User.email, User.push_tokens, User.last_active_at).order_by(User.id)
                ).all(),
                session.execute(
                    select(
                        Attendance.user_id, Attendance.course_id, Attendance.day, Attendance.status
                    ).order_by(Attendance.user_id, Attendance.course_id, Attendance.day)
                ).all(),
                session.execute(
                    select(Grade.user_id, Grade.points, Grade.posted_at).order_by(Grade.id)
                ).all(),
            )

    # Then both databases hold the same rows, with every index and foreign key back in place
    assert contents(engine) == contents(sqlite)
    sqlite.dispose()
    assert summary.attendance == summary.enrollments * 30
    with engine.connect() as connection:
        indexes = connection.execute(
            text("SELECT count(*) FROM pg_indexes WHERE tablename = 'attendance'")
        ).scalar_one()
        foreign_keys = connection.execute(
            text(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'attendance'::regclass AND contype = 'f'"
            )
        ).scalar_one()
    assert (indexes, foreign_keys) == (2, 2)
    # And new users get ids after the seeded ones
    with session_scope(engine) as session:
        user = User(name="New", role="admin")
        session.add(user)
        session.flush()
        assert user.id > summary.students + summary.instructors + 1
    # And a second seed is refused
    with pytest.raises(AlreadySeededError):
        seed(engine, students=150, seed=11, today=TODAY)
    with Session(engine) as session:
        assert (
            session.scalar(select(func.count()).select_from(User))
            == summary.students + summary.instructors + 2
        )


def test_a_connection_killed_while_idle_in_the_pool_is_replaced_before_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine whose pooled connection has been idle past the ping threshold
    monkeypatch.setattr("store.db.IDLE_PING_SECONDS", 0.0)
    engine = make_engine(pg_url)
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(text("select pg_backend_pid()")).scalar_one()
        # When the server drops that connection (a restart, an idle timeout)
        admin = make_engine(pg_url)
        with admin.connect() as other:
            other.execute(text("select pg_terminate_backend(:pid)"), {"pid": first_pid})
            other.commit()
        admin.dispose()
        # Then the next use gets a working connection, not an error: the ping found the dead one
        with engine.connect() as connection:
            assert connection.execute(text("select pg_backend_pid()")).scalar_one() != first_pid
    finally:
        engine.dispose()


def test_a_busy_connection_is_not_pinged(pg_url: str) -> None:
    # Given a connection returned to the pool a moment ago
    engine = make_engine(pg_url)
    statements: list[str] = []
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        # When it is checked out again at once and used
        with engine.connect() as connection:
            connection.execute(text("select 2"))
        # Then only the statement ran: no ping round trip before it
        assert statements == ["select 2"]
    finally:
        engine.dispose()
