"""Settings: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brokers.settings import DEVELOPMENT_SIGNING_KEY, load_settings
from contracts.errors import ConfigurationError
from tests.worker import ROOT


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDUJOBS_RABBITMQ_URL", raising=False)
    settings = load_settings()
    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url is None
    assert settings.dead_letter_ttl_days == 14


def settings_error(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    """The message start-up stops with, in this environment."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    return str(error.value)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a RabbitMQ URL that is not AMQP and a negative timeout, when the settings are read
    message = settings_error(
        monkeypatch, EDUJOBS_RABBITMQ_URL="http://localhost:5672", EDUJOBS_SENDGRID_TIMEOUT="-1"
    )
    # Then each bad variable is named with what it expects
    assert "EDUJOBS_RABBITMQ_URL: Value error, expected an amqp:// or amqps:// URL" in message
    assert "EDUJOBS_SENDGRID_TIMEOUT" in message


def test_postgresql_urls_use_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().database_url == "postgresql+psycopg://u@h/db"


def test_the_worker_refuses_to_start_with_a_bad_setting() -> None:
    # Given a bad database URL, when the CLI starts, then it exits 2 naming the variable
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "EDUJOBS_DATABASE_URL": "mysql://x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "EDUJOBS_DATABASE_URL" in result.stderr


def test_production_refuses_the_development_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a production environment that left EDUJOBS_SIGNING_KEY unset
    monkeypatch.setenv("EDUJOBS_ENVIRONMENT", "production")
    monkeypatch.delenv("EDUJOBS_SIGNING_KEY", raising=False)
    # When the settings are read, then start-up stops naming the variable to set
    with pytest.raises(ConfigurationError, match=r"EDUJOBS_SIGNING_KEY: .*development key is refused"):
        load_settings()
    # And so it does when the development key is set explicitly
    monkeypatch.setenv("EDUJOBS_SIGNING_KEY", DEVELOPMENT_SIGNING_KEY)
    with pytest.raises(ConfigurationError, match="EDUJOBS_SIGNING_KEY"):
        load_settings()
    # And a key of its own is accepted
    monkeypatch.setenv("EDUJOBS_SIGNING_KEY", "a-long-production-secret")
    assert load_settings().signing_key.get_secret_value() == "a-long-production-secret"


def test_development_keeps_the_built_in_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDUJOBS_ENVIRONMENT", "development")
    monkeypatch.delenv("EDUJOBS_SIGNING_KEY", raising=False)
    assert load_settings().signing_key.get_secret_value() == DEVELOPMENT_SIGNING_KEY


def test_an_invalid_url_is_echoed_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given URLs of the wrong scheme that carry credentials, when the settings are read
    message = settings_error(
        monkeypatch,
        EDUJOBS_RABBITMQ_URL="http://admin:s3cret-pass@rabbit.internal:5672/",
        EDUJOBS_REDIS_URL="http://:hunter2-token@redis.internal:6379/0",
    )
    # Then the message shows each URL, user kept, password masked
    assert "http://admin:***@rabbit.internal:5672/" in message
    assert "http://:***@redis.internal:6379/0" in message
    assert "s3cret-pass" not in message and "hunter2-token" not in message
