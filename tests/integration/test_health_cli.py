"""``edujobs health``: a probe whose exit code says whether RabbitMQ and the database are usable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from brokers.settings import get_settings
from ops.cli import app


def test_a_migrated_database_and_a_running_rabbitmq_are_healthy(edujobs_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["health", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"rabbitmq": "ok", "database": "ok", "healthy": True}


def test_an_unmigrated_database_is_unhealthy_and_says_what_to_run(
    edujobs_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    result = CliRunner().invoke(app, ["health", "--json"])
    assert result.exit_code == 1
    database = json.loads(result.stdout)["database"]
    assert "not migrated" in database and "edujobs db upgrade" in database


def test_an_unreachable_rabbitmq_and_missing_workers_are_unhealthy(
    edujobs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(app, ["health", "--workers", "--json"])
    assert result.exit_code == 1
    checks = json.loads(result.stdout)
    assert checks["rabbitmq"] == "ok" and "no worker consumes notifications" in checks["workers"]
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2F")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["health", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["rabbitmq"] != "ok"
