"""Commands print JSON with --json, for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops.cli import app
from store.migrate import heads


def run(*args: str) -> object:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_database_tokens_and_contracts_commands_speak_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # get_engine keeps one engine per URL: this test's URL is new
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    upgraded = run("db", "upgrade")
    assert isinstance(upgraded, dict) and upgraded["revisions"] == list(heads())
    created = run("tokens", "create", "lms", "--scope", "enqueue:notifications", "--as", "ana")
    assert isinstance(created, dict) and created["token"].startswith("ej_")
    assert run("tokens", "revoke", "lms", "--as", "ana") == {"name": "lms", "revoked": True}
    exported = run("contracts", "export", str(tmp_path / "schemas"))
    assert isinstance(exported, dict)
    assert any(name.endswith("notifications.send_email.schema.json") for name in exported["files"])
