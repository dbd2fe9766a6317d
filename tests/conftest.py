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
from tests.fakes import fcm, twilio
from tests.fakes.fcm import FakeFcm
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio
from tests.services import postgres_database, rabbitmq_vhost


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
def database_url() -> Iterator[str]:
    with postgres_database() as url:
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
    env = {
        "EDUJOBS_ENVIRONMENT": "test",
        "EDUJOBS_RABBITMQ_URL": amqp_url,
        "EDUJOBS_DATABASE_URL": database_url,
        "EDUJOBS_SENDGRID_HOST": fake_sendgrid.url,
        "EDUJOBS_SENDGRID_API_KEY": "SG.test-key",
        "EDUJOBS_SENDGRID_TIMEOUT": "5",
        "EDUJOBS_EMAIL_FROM": "school@example.edu",
        "EDUJOBS_TWILIO_BASE_URL": fake_twilio.url,
        "EDUJOBS_TWILIO_ACCOUNT_SID": twilio.ACCOUNT_SID,
        "EDUJOBS_TWILIO_AUTH_TOKEN": twilio.AUTH_TOKEN,
        "EDUJOBS_TWILIO_FROM_NUMBER": twilio.FROM_NUMBER,
        "EDUJOBS_TWILIO_TIMEOUT": "5",
        "EDUJOBS_TWILIO_STATUS_CALLBACK_URL": "https://school.example.edu/hooks/twilio",
        "EDUJOBS_FCM_PROJECT_ID": fcm.PROJECT_ID,
        "EDUJOBS_FCM_BASE_URL": fake_fcm.url,
        "EDUJOBS_FCM_TIMEOUT": "5",
        "EDUJOBS_SIGNING_KEY": "test-signing-key",
        "EDUJOBS_METRICS_PORT": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    upgrade(database_url)
    return env
