"""Nothing but ``edujobs db upgrade`` creates tables: a command run on a database that was never
migrated (or is behind) says "run edujobs db upgrade" in one line and exits 1, leaving the database
as it found it; ``db upgrade`` then works, and also recovers a database an earlier edujobs left with
APScheduler's ``apscheduler_jobs`` and no migration record. On PostgreSQL and SQLite."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import MetaData, inspect, text
from typer.testing import CliRunner

from ops.api import app_from_settings
from ops.cli import app
from schedules.jobs import job_store
from store.db import make_engine
from store.migrate import NotMigratedError, current, heads, upgrade
from tests.services import postgres_database

runner = CliRunner()
COMMANDS = [
    ["schedules"],
    ["schedules", "add", "x", "maintenance.run_cleanup", "{}", "--cron", "0 3 * * *"],
    ["jobs", "show", "0c1d"],
    ["tokens", "list"],
    ["seed", "--students", "1"],
    ["queues", "pause", "media"],
    ["scheduler"],
    ["api", "--port", "1"],
]


@pytest.fixture(params=["postgresql", "sqlite"])
def new_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database nobody migrated, as ``EDUJOBS_DATABASE_URL``."""
    if request.param == "postgresql":
        with postgres_database() as url:
            monkeypatch.setenv("EDUJOBS_DATABASE_URL", url)
            yield url
    else:
        url = f"sqlite:///{tmp_path / 'new.db'}"
        monkeypatch.setenv("EDUJOBS_DATABASE_URL", url)
        yield url


def tables(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_before_migrating_says_run_db_upgrade_and_creates_nothing(
    new_database: str, command: list[str]
) -> None:
    # When an operator runs a command on a database nobody migrated yet
    result = runner.invoke(app, command)
    # Then it stops with one line saying what to run, exit 1
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert "run `edujobs db upgrade`" in line and "not migrated" in line
    # And it created no table, so the migration that follows works
    assert tables(new_database) == []
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert current(new_database) == heads()


def test_db_upgrade_recovers_a_database_left_with_only_apschedulers_table(new_database: str) -> None:
    # Given the state an earlier edujobs left: `edujobs schedules` on a new database made APScheduler
    # create its table (with one job in it), and no migration ever ran
    engine = make_engine(new_database)
    store = SQLAlchemyJobStore(engine=engine, metadata=MetaData())
    store.jobs_t.create(engine, True)  # what SQLAlchemyJobStore.start does
    with engine.begin() as connection:
        connection.execute(
            store.jobs_t.insert().values(
                id="dynamic:x", next_run_time=1.0e9, job_state=pickle.dumps({"v": 1})
            )
        )
    engine.dispose()
    assert tables(new_database) == ["apscheduler_jobs"] and current(new_database) == ()
    # When the operator runs the migrations
    result = runner.invoke(app, ["db", "upgrade"])
    # Then they succeed, the database is at the latest revision, and the job is kept
    assert result.exit_code == 0, result.output
    assert current(new_database) == heads()
    engine = make_engine(new_database)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, next_run_time FROM apscheduler_jobs")).all()
    engine.dispose()
    assert [(row[0], row[1]) for row in rows] == [("dynamic:x", 1.0e9)]
    assert "apscheduler_jobs_before_migration" not in tables(new_database)


def test_a_database_behind_the_code_is_not_migrated_either(new_database: str) -> None:
    # Given a database an older edujobs migrated (before the schedules' tables)
    upgrade(new_database, "0004_queue_pauses")
    # When the schedules are listed, Then the operator is told where it is and what to run
    result = runner.invoke(app, ["schedules"])
    assert result.exit_code == 1
    assert "not migrated (at 0004_queue_pauses, latest" in result.output
    assert "apscheduler_jobs" not in tables(new_database)


def test_the_api_and_the_job_store_refuse_to_start_and_create_nothing(new_database: str) -> None:
    engine = make_engine(new_database)
    try:
        with pytest.raises(NotMigratedError, match="run `edujobs db upgrade`"):
            app_from_settings()
        with pytest.raises(NotMigratedError, match="run `edujobs db upgrade`"):
            job_store(engine)
    finally:
        engine.dispose()
    assert tables(new_database) == []


def test_a_failed_migration_is_one_line_saying_what_failed(new_database: str) -> None:
    # Given a database with an edujobs table nobody migrated (made by hand, or by create_all)
    engine = make_engine(new_database)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    # When it is migrated, Then the failure is one line naming the problem, exit 1
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "the migration to heads failed" in line and "users" in line
