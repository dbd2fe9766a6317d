"""Settings: a bad value stops start-up with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from brokers.settings import load_settings
from contracts.errors import ConfigurationError
from tests.worker import ROOT


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDUJOBS_RABBITMQ_URL", raising=False)
    settings = load_settings()
    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url is None
    assert settings.dead_letter_ttl_days == 14


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a RabbitMQ URL that is not AMQP and a negative timeout
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", "http://localhost:5672")
    monkeypatch.setenv("EDUJOBS_SENDGRID_TIMEOUT", "-1")
    # When the settings are read
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    # Then each bad variable is named with what it expects
    message = str(error.value)
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
