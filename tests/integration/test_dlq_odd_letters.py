"""Odd dead letters (``tests.odd_letters``) on the real RabbitMQ: the CLI and the HTTP API list, show,
export and purge every one, and requeue only the well-formed messages, saying why for the others.

Issue 14, finding 9: a dead letter with non-dict ``options`` or deeply nested JSON crashed
``dlq list``, ``dlq stats``, ``dlq purge``, ``/v1/dlq`` and the page, so that nobody could purge it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from brokers.client import Client
from ops.api import create_app
from ops.cli import app
from store import tokens
from tests.amqp import depth, take
from tests.integration.test_dlq import engine, topology  # noqa: F401  (fixtures)
from tests.integration.test_dlq_cli import env  # noqa: F401  (fixture)
from tests.odd_letters import KEY, OddLetter, publish_odd_letters

runner = CliRunner()


def cli_json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (args, result.output[-2000:], result.exception)
    return json.loads(result.output)


def requeued_ids(letters: list[OddLetter]) -> set[str]:
    return {x.message_id for x in letters if x.requeueable and x.message_id is not None}


def test_the_cli_lists_shows_exports_requeues_and_purges_every_odd_letter(env: str) -> None:  # noqa: F811
    # Given the whole corpus of odd dead letters in maintenance.XQ
    letters = publish_odd_letters(env)
    # When an operator asks for the stats, the list and each letter, as JSON and as tables
    stats: Any = cli_json("dlq", "stats")
    listed: Any = cli_json("dlq", "list", "maintenance", "--limit", "1000")
    # Then every letter is counted and listed, with times that are numbers or nothing
    assert {s["queue"]: s["count"] for s in stats}["maintenance"] == len(letters)
    assert len(listed) == len(letters)
    for summary in listed:
        for key in ("first_failure_at", "last_failure_at"):
            assert summary[key] is None or isinstance(summary[key], int), summary
        assert summary["attempts"] is None or isinstance(summary["attempts"], int), summary
    for args in (["dlq", "stats"], ["dlq", "list", "maintenance", "--limit", "1000"]):
        table = runner.invoke(app, args)
        assert table.exit_code == 0, (args, table.output[-2000:], table.exception)
    for summary in listed:
        shown: Any = cli_json("dlq", "show", summary["id"], "--queue", "maintenance")
        assert shown["id"] == summary["id"]
        table = runner.invoke(app, ["dlq", "show", summary["id"], "--reveal", "--as", "dave"])
        assert table.exit_code == 0, (summary, table.output[-2000:], table.exception)
    # And the export writes one JSON line per letter
    exported = runner.invoke(app, ["dlq", "export", "maintenance", "-"])
    assert exported.exit_code == 0, (exported.output[-2000:], exported.exception)
    assert len([json.loads(line) for line in exported.output.splitlines()]) == len(letters)
    # When every letter is requeued
    result: Any = cli_json("dlq", "requeue", "maintenance", "--all", "--yes")
    # Then only the well-formed messages go back to their queue; each other one is refused with why
    assert result["count"] == sum(x.requeueable for x in letters)
    assert len(result["skipped"]) == len(letters) - result["count"]
    assert all(skip["why"] for skip in result["skipped"])
    back = take(env, "maintenance", result["count"])
    assert requeued_ids(letters) <= {r.message()["message_id"] for r in back}
    # And a purge removes every letter left
    purged: Any = cli_json("dlq", "purge", "maintenance", "--yes")
    assert purged["count"] == len(result["skipped"])
    assert depth(env, "maintenance.XQ") == 0


@pytest.fixture
def api(topology: str, engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    client = Client(topology, signing_key=KEY)
    with TestClient(create_app(rabbitmq_url=topology, engine=engine, client=client)) as http:
        yield http
    client.close()


def test_the_api_and_the_page_s_endpoints_serve_every_odd_letter(
    api: TestClient,
    engine: Engine,  # noqa: F811
    topology: str,  # noqa: F811
) -> None:
    # Given the corpus of odd dead letters, and an operator's token
    letters = publish_odd_letters(topology)
    token = tokens.create(engine, name="oncall", scopes=["ops:write"], created_by="t")
    headers = {"Authorization": "Bearer " + token}
    # When the page loads the stats and a cause's letters, and opens each letter
    stats = api.get("/v1/dlq", headers=headers)
    listed = api.get("/v1/dlq/maintenance?limit=1000", headers=headers)
    # Then each answer is JSON with every letter, grouped by cause
    assert stats.status_code == 200, stats.text[-2000:]
    [maintenance] = [s for s in stats.json() if s["queue"] == "maintenance"]
    assert maintenance["count"] == len(letters)
    assert sum(g["count"] for g in maintenance["groups"]) == len(letters)
    for group in maintenance["groups"]:
        assert isinstance(group["fingerprint"], str) and isinstance(group["sample_error"], str)
        assert group["newest"] is None or isinstance(group["newest"], int)
        by_cause = api.get(
            "/v1/dlq/maintenance", params={"fingerprint": group["fingerprint"], "limit": 200}, headers=headers
        )
        assert by_cause.status_code == 200 and len(by_cause.json()) == group["count"]
    assert listed.status_code == 200 and len(listed.json()) == len(letters)
    for summary in listed.json():
        for reveal in ("false", "true"):
            shown = api.get(f"/v1/dlq/maintenance/{summary['id']}?reveal={reveal}", headers=headers)
            assert shown.status_code == 200, (summary, shown.text[-2000:])
    # When every letter is requeued, then purged
    requeued = api.post("/v1/dlq/maintenance/requeue", json={"all": True}, headers=headers).json()
    purged = api.post("/v1/dlq/maintenance/purge", json={}, headers=headers).json()
    # Then the well-formed ones went back, the others were refused with why, and then purged
    assert requeued["count"] == sum(x.requeueable for x in letters)
    assert all(skip["why"] for skip in requeued["skipped"])
    assert purged["count"] == len(letters) - requeued["count"]
    assert depth(topology, "maintenance.XQ") == 0
    back = take(topology, "maintenance", requeued["count"])
    assert requeued_ids(letters) <= {r.message()["message_id"] for r in back}
