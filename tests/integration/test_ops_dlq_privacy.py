"""Dead-letter review keeps personal data out of sight unless an operator reveals it (and every
reveal or export is audited), an action that fails halfway is still audited, and a purge can be
limited to one cause. On the real RabbitMQ and PostgreSQL, through the service, the CLI and the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from ops.cli import app
from ops.dlq import DeadLetter, DeadLetters, Selection
from store import audit
from tests.amqp import depth, take
from tests.integration.test_api import api, bearer  # noqa: F401  (fixture)
from tests.integration.test_dlq import dead_letter, engine, ids, topology  # noqa: F401  (fixtures)

runner = CliRunner()
KEY = b"test-signing-key"
EMAIL = "ada.lovelace@example.org"
ERROR = f"SendGrid refused {EMAIL}: mailbox unavailable"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "actors/notifications/service.py", line 88, in send_email\n'
    f"RecipientError: {ERROR}\n"
)


@pytest.fixture
def env(topology: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", topology)
    monkeypatch.setenv("EDUJOBS_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    return topology


def undeliverable_email(url: str) -> dict[str, object]:
    return dead_letter(
        url,
        "notifications.send_email",
        {"user_id": 7, "to": EMAIL, "template": "welcome"},
        queue="notifications",
        exception="RecipientError",
        error=ERROR,
        traceback=TRACEBACK,
    )


def test_show_redacts_the_traceback_and_headers_that_repeat_the_error(topology: str) -> None:  # noqa: F811
    # Given a dead letter whose error, traceback and x-edujobs-error header quote the recipient
    message = undeliverable_email(topology)
    letters = DeadLetters(topology)
    # When an operator shows it without --reveal
    shown = letters.show(str(message["message_id"]))
    # Then the address appears nowhere, though the rest of the record does
    assert EMAIL not in json.dumps(shown)
    assert shown["error"] == "SendGrid refused [redacted]: mailbox unavailable"
    assert EMAIL not in shown["headers"]["x-edujobs-error"]
    assert shown["headers"]["x-edujobs-exception"] == "RecipientError"
    assert shown["traceback"].endswith("RecipientError: SendGrid refused [redacted]: mailbox unavailable\n")
    assert 'File "actors/notifications/service.py", line 88' in shown["traceback"]
    # And with --reveal the record is there whole (the AMQP headers, which RabbitMQ's own UI shows,
    # were scrubbed when the message was dead-lettered, so they stay scrubbed)
    revealed = letters.show(str(message["message_id"]), reveal=True)
    assert revealed["error"] == ERROR and revealed["traceback"] == TRACEBACK
    assert EMAIL not in revealed["headers"]["x-edujobs-error"]


def test_the_api_shows_a_dead_letter_redacted_unless_revealed(
    api: TestClient,  # noqa: F811
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    message = undeliverable_email(topology)
    path = f"/v1/dlq/notifications/{message['message_id']}"
    shown = api.get(path, headers=bearer(engine, "dashboard", "ops:read"))
    assert shown.status_code == 200 and EMAIL not in shown.text
    revealed = api.get(path + "?reveal=true", headers=bearer(engine, "oncall", "ops:write"))
    assert revealed.json()["error"] == ERROR
    [entry] = audit.recent(engine, action="dlq.reveal")
    assert entry.actor == "token:oncall"


def test_export_redacts_unless_revealed_and_is_audited(env: str, engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    # Given an undeliverable email in the dead letters
    message = undeliverable_email(env)
    redacted, revealed = tmp_path / "redacted.jsonl", tmp_path / "revealed.jsonl"
    # When an operator exports them, then again with --reveal
    plain = runner.invoke(app, ["dlq", "export", "notifications", str(redacted), "--as", "erin"])
    full = runner.invoke(app, ["dlq", "export", "notifications", str(revealed), "--reveal", "--as", "erin"])
    # Then the first file holds no personal data, the second the message as it was
    assert plain.exit_code == 0 and "personal data redacted" in plain.output
    assert full.exit_code == 0, full.output
    assert EMAIL not in redacted.read_text()
    [line] = [json.loads(x) for x in redacted.read_text().splitlines()]
    assert line["message"]["message_id"] == message["message_id"]
    assert line["message"]["kwargs"] == {"user_id": 7, "to": "[redacted]", "template": "welcome"}
    assert line["revealed"] is False
    [whole] = [json.loads(x) for x in revealed.read_text().splitlines()]
    assert whole["message"] == message and whole["message"]["options"]["dead_letter"]["error"] == ERROR
    # And both exports are in the audit log: who, how many, to which file, revealed or not
    entries = audit.recent(engine, action="dlq.export")
    assert [(e.actor, e.target, e.details) for e in reversed(entries)] == [
        ("erin", "notifications", {"count": 1, "file": str(redacted.resolve()), "revealed": False}),
        ("erin", "notifications", {"count": 1, "file": str(revealed.resolve()), "revealed": True}),
    ]
    # And nothing left the dead-letter queue
    assert depth(env, "notifications.XQ") == 1


def test_a_requeue_interrupted_halfway_is_audited_with_what_it_did(topology: str, engine: Engine) -> None:  # noqa: F811
    # Given three dead letters
    sent = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(3)]
    letters = DeadLetters(topology, engine=engine)

    def crash_on_second(letter: DeadLetter) -> None:
        if letter.id == sent[1]["message_id"]:
            raise KeyboardInterrupt("operator killed the process")

    # When the requeue dies after the second is published and before its dead letter is removed
    with pytest.raises(KeyboardInterrupt):
        letters.requeue("maintenance", Selection(all=True), operator="frank", after_publish=crash_on_second)
    # Then the audit log says one was requeued, one is in both queues, and why it stopped
    [entry] = audit.recent(engine, action="dlq.requeue")
    assert entry.actor == "frank"
    assert entry.details["count"] == 1 and entry.details["ids"] == [sent[0]["message_id"]]
    assert entry.details["in_both"] == [sent[1]["message_id"]]
    assert entry.details["failed"] == "KeyboardInterrupt: operator killed the process"
    assert len(take(topology, "maintenance", 2)) == 2


def test_purge_by_fingerprint_removes_only_that_cause(api: TestClient, engine: Engine, topology: str) -> None:  # noqa: F811
    # Given two causes of death in the same queue
    broken = [dead_letter(topology, "testing.fail_permanently", {"user_id": i}) for i in range(2)]
    timeout = dead_letter(
        topology, "testing.record", {"value": "v"}, reason="retries_exhausted", exception="TimeoutError"
    )
    fingerprint = broken[0]["options"]["dead_letter"]["fingerprint"]
    writer = bearer(engine, "oncall", "ops:write")
    # When the operator purges one cause (what the web page's Purge button on a cause row sends)
    purged = api.post("/v1/dlq/maintenance/purge", json={"fingerprint": fingerprint}, headers=writer)
    # Then only that cause's dead letters are gone, and the audit says which cause
    assert purged.status_code == 200, purged.text
    assert purged.json()["ids"] == [m["message_id"] for m in broken]
    assert ids(DeadLetters(topology).list("maintenance")) == [timeout["message_id"]]
    [entry] = audit.recent(engine, action="dlq.purge")
    assert entry.details["selection"]["fingerprint"] == fingerprint and entry.details["count"] == 2


def test_cli_purge_by_fingerprint_and_requeue_of_an_unknown_id(env: str) -> None:
    kept = dead_letter(env, "testing.record", {"value": "v"}, reason="retries_exhausted", exception="E")
    gone = dead_letter(env, "testing.fail_permanently", {"user_id": 1})
    fingerprint = gone["options"]["dead_letter"]["fingerprint"]
    purged = runner.invoke(app, ["dlq", "purge", "maintenance", "--fingerprint", fingerprint, "--yes"])
    assert purged.exit_code == 0 and purged.output.startswith("purged 1")
    assert ids(DeadLetters(env).list("maintenance")) == [kept["message_id"]]
    # A requeue of an id that is not there fails and says so, and requeues nothing
    unknown = runner.invoke(app, ["dlq", "requeue", "maintenance", "--id", "no-such-id", "--yes"])
    assert unknown.exit_code == 1
    assert "no dead letter no-such-id in maintenance.XQ" in unknown.output
    assert depth(env, "maintenance") == 0 and depth(env, "maintenance.XQ") == 1
