"""Letters a real worker dead-letters as undecodable (non-object ``options``, JSON nested 10,000
levels deep) can be listed, shown, exported, refused for requeue with a reason, and purged with the
``edujobs dlq`` commands (issue 14, finding 9)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from ops.cli import app
from tests.amqp import depth, dramatiq_message, publish
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"
runner = CliRunner()


@pytest.fixture
def worker(edujobs_env: dict[str, str]) -> Iterator[WorkerProcess]:
    process = WorkerProcess(edujobs_env, threads=2, module="tests.e2e.actors_testing").wait_ready()
    yield process
    process.stop()


def dlq(*args: str) -> Any:
    result = runner.invoke(app, ["dlq", *args, "--json"])
    assert result.exit_code == 0, (args, result.output[-2000:], result.exception)
    return json.loads(result.output)


def test_letters_a_worker_could_not_decode_are_listed_refused_for_requeue_and_purged(
    worker: WorkerProcess, amqp_url: str
) -> None:
    # Given a signed message whose options are a list, and a body nested 10,000 levels deep
    bent = dramatiq_message("testing.record", "maintenance", {"value": "bent"}, key=KEY)
    bent["options"] = ["eta", 0]
    publish(amqp_url, "maintenance", json.dumps(bent).encode())
    publish(amqp_url, "maintenance", b"[" * 10_000 + b"]" * 10_000)
    # When the worker has dead-lettered both
    wait_until(lambda: depth(amqp_url, "maintenance.XQ") == 2, what="two dead letters")
    # Then the operator sees both, as undecodable, in the stats, the list and one by one
    [stats] = [s for s in dlq("stats") if s["queue"] == "maintenance"]
    assert stats["count"] == 2
    listed = dlq("list", "maintenance")
    assert [x["reason"] for x in listed] == ["undecodable", "undecodable"]
    for letter in listed:
        shown = dlq("show", letter["id"], "--queue", "maintenance")
        assert shown["not_requeueable"]
    exported = runner.invoke(app, ["dlq", "export", "maintenance", "-"])
    assert exported.exit_code == 0 and len(exported.output.splitlines()) == 2
    # And a requeue refuses both, saying why, and leaves them in place
    refused = dlq("requeue", "maintenance", "--all", "--yes")
    assert refused["count"] == 0 and len(refused["skipped"]) == 2
    assert depth(amqp_url, "maintenance.XQ") == 2
    # And a purge removes both
    assert dlq("purge", "maintenance", "--yes")["count"] == 2
    assert depth(amqp_url, "maintenance.XQ") == 0
    assert worker.process.poll() is None
