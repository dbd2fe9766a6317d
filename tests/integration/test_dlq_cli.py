"""``edujobs dlq`` on the real RabbitMQ and PostgreSQL, as an operator types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ops.cli import app
from store import audit
from tests.amqp import depth, take
from tests.integration.test_dlq import dead_letter, engine, topology  # noqa: F401  (fixtures)

runner = CliRunner()


@pytest.fixture
def env(topology: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", topology)
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    return topology


def test_stats_list_and_show_leave_the_dead_letters_in_place(env: str) -> None:
    sent = [
        dead_letter(env, "testing.fail_permanently", {"user_id": i, "phone": "+33612345678"})
        for i in range(2)
    ]
    stats = runner.invoke(app, ["dlq", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert {s["queue"]: s["count"] for s in json.loads(stats.output)}["maintenance"] == 2
    listed = runner.invoke(app, ["dlq", "list", "maintenance", "--json", "--since", "1h"])
    assert [x["id"] for x in json.loads(listed.output)] == [m["message_id"] for m in sent]
    table = runner.invoke(app, ["dlq", "list", "maintenance"])
    assert table.exit_code == 0 and "2 dead letters" in table.output
    shown = runner.invoke(app, ["dlq", "show", sent[0]["message_id"], "--json"])
    assert json.loads(shown.output)["kwargs"]["phone"] == "[redacted]"
    assert depth(env, "maintenance.XQ") == 2


def test_requeue_asks_for_confirmation_and_is_audited(env: str, engine: Engine) -> None:  # noqa: F811
    sent = dead_letter(env, "testing.fail_permanently", {"user_id": 1})
    refused = runner.invoke(app, ["dlq", "requeue", "maintenance", "--all"], input="n\n")
    assert refused.exit_code == 1 and depth(env, "maintenance.XQ") == 1
    dry = runner.invoke(app, ["dlq", "requeue", "maintenance", "--all", "--dry-run"])
    assert "would requeue 1" in dry.output and depth(env, "maintenance.XQ") == 1
    done = runner.invoke(
        app, ["dlq", "requeue", "maintenance", "--id", sent["message_id"], "--yes", "--as", "dave"]
    )
    assert done.exit_code == 0 and "requeued 1" in done.output
    assert take(env, "maintenance", 1)[0].message()["message_id"] == sent["message_id"]
    [entry] = audit.recent(engine, action="dlq.requeue")
    assert entry.actor == "dave"


def test_purge_export_and_bad_arguments(env: str, tmp_path: Path) -> None:
    dead_letter(env, "testing.fail_permanently", {"user_id": 1})
    out = tmp_path / "dead.jsonl"
    assert runner.invoke(app, ["dlq", "export", "maintenance", str(out)]).exit_code == 0
    assert len(out.read_text().splitlines()) == 1 and depth(env, "maintenance.XQ") == 1
    bad = runner.invoke(app, ["dlq", "purge", "maintenance", "--older-than", "soon", "--yes"])
    assert bad.exit_code == 2 and "duration" in bad.output
    assert runner.invoke(app, ["dlq", "requeue", "maintenance"]).exit_code == 2
    assert runner.invoke(app, ["dlq", "list", "nope"]).exit_code == 2
    assert runner.invoke(
        app, ["dlq", "purge", "maintenance", "--older-than", "1d", "--yes"]
    ).output.startswith("purged 0")
    assert runner.invoke(app, ["dlq", "purge", "maintenance", "--yes"]).exit_code == 0
    assert depth(env, "maintenance.XQ") == 0


def test_tokens_create_list_revoke(env: str) -> None:
    created = runner.invoke(app, ["tokens", "create", "lms", "--scope", "enqueue:notifications"])
    assert created.exit_code == 0 and created.output.startswith("ej_")
    assert runner.invoke(app, ["tokens", "create", "x", "--scope", "root"]).exit_code == 2
    listed = json.loads(runner.invoke(app, ["tokens", "list", "--json"]).output)
    assert [(t["name"], t["scopes"], t["revoked_at"]) for t in listed] == [
        ("lms", ["enqueue:notifications"], None)
    ]
    assert runner.invoke(app, ["tokens", "revoke", "lms"]).exit_code == 0
    assert runner.invoke(app, ["tokens", "revoke", "lms"]).exit_code == 1
