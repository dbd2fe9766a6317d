"""Fixtures shared by every kind of test.

Tests under ``tests/integration`` and ``tests/e2e`` are marked ``integration`` / ``e2e``; their
fixtures give each test its own RabbitMQ vhost, PostgreSQL database and fake providers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.stub  # noqa: F401  (sets the process's StubBroker before any actor is imported)
from brokers.settings import get_settings
from middleware.breaker_storage import BreakerRegistry, install
from store.migrate import upgrade
from tests.fakes.fcm import FakeFcm
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio
from tests.services import postgres_database, rabbitmq_vhost, services_environment


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    # Settings are read once per process; tests that change the environment need a fresh read.
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def fresh_breakers() -> Iterator[BreakerRegistry]:
    """In-process circuit breakers for one test, so that failures a test provokes on purpose do not
    leave a provider's breaker open for the next test."""
    registry = BreakerRegistry()
    previous = install(registry)
    yield registry
    if previous is not None:
        install(previous)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    with rabbitmq_vhost() as url:
        yield url


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    # For ``edujobs_env``, which migrates it anyway, a copy of a migrated database (much faster)
    with postgres_database(migrated="edujobs_env" in request.fixturenames) as url:
        yield url


@pytest.fixture
def migrated_database_url() -> Iterator[str]:
    """A database at the latest revision: a copy of one this process migrated once."""
    with postgres_database(migrated=True) as url:
        yield url


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    server = FakeSendGrid().start()
    yield server
    server.stop()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio().start()
    yield server
    server.stop()


@pytest.fixture
def fake_fcm() -> Iterator[FakeFcm]:
    server = FakeFcm().start()
    yield server
    server.stop()


@pytest.fixture
def edujobs_env(
    amqp_url: str,
    database_url: str,
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio,
    fake_fcm: FakeFcm,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The environment of a worker and a producer wired to this test's services (database migrated)."""
    env = services_environment(amqp_url, database_url, fake_sendgrid, fake_twilio, fake_fcm)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    upgrade(database_url)
    return env
