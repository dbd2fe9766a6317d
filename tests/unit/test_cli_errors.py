"""Bad command-line input gets exit status 2 and a message saying what to fix; nothing is sent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ops.cli import app


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            "{bad",
            "PAYLOAD is not valid JSON (Expecting property name enclosed in double quotes at position 1)",
        ),
        ("[1]", "PAYLOAD must be a JSON object of the actor's arguments"),
    ],
)
def test_a_payload_that_is_not_a_json_object_is_refused(payload: str, message: str) -> None:
    result = CliRunner().invoke(app, ["send", "notifications.send_email", payload])
    assert result.exit_code == 2
    assert message in result.output


def test_an_invalid_payload_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDUJOBS_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:1/%2F")  # never reached
    result = CliRunner().invoke(
        app, ["send", "notifications.send_email", '{"user_id": 0, "template": "welcome"}']
    )
    assert result.exit_code == 2
    assert "user_id" in result.output and "greater than 0" in result.output


def test_an_unknown_queue_lists_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["queues", "resume", "emails"])
    assert result.exit_code == 2
    assert (
        "unknown queue 'emails': use one of notifications, media, reports, academics, maintenance"
        in result.output
    )
