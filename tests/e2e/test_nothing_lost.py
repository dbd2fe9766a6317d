"""Nothing is lost: a message is processed, or it is a dead letter with its reason — under faults.

Each test breaks something under a real `dramatiq actors` worker (a queue that refuses publishes, a
connection closed by RabbitMQ, a shutdown, a pause) and checks where every message ended up.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ops.cli import app
from tests.amqp import depth, dramatiq_message, publish, take
from tests.e2e.conftest import recorded
from tests.rabbitmq_policies import refusing
from tests.services import AUTH, MANAGEMENT_URL, management_get
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"

pytestmark = pytest.mark.faults


def start(env: dict[str, str], redis_key: str, **extra: str) -> WorkerProcess:
    environment = {**env, "EDUJOBS_TEST_KEY": redis_key, **extra}
    return WorkerProcess(environment, threads=1, module="tests.e2e.actors_testing").wait_ready()


def message(actor: str, **kwargs: Any) -> dict[str, Any]:
    return dramatiq_message(actor, "maintenance", kwargs, key=KEY)


def vhost_of(url: str) -> str:
    return urllib.parse.quote(urllib.parse.unquote(url.rsplit("/", 1)[1]), safe="")


def consumers(url: str, queue: str) -> int:
    found = management_get(f"/api/queues/{vhost_of(url)}/{queue}").get("consumers")
    return int(found or 0)


def close_consumer_connections(url: str, queue: str) -> int:
    """Close, from RabbitMQ's side, the connections whose channels consume ``queue``, as a RabbitMQ
    restart, a missed heartbeat or a consumer_timeout would. The management API lists a consumer
    within its stats interval: wait for it to show."""
    names: set[str] = set()

    def listed() -> bool:
        details = management_get(f"/api/queues/{vhost_of(url)}/{queue}").get("consumer_details") or []
        names.update(d["channel_details"]["connection_name"] for d in details if d.get("channel_details"))
        return bool(names)

    wait_until(listed, what=f"the consumers of {queue} listed by RabbitMQ")
    closed = 0
    with httpx.Client(base_url=MANAGEMENT_URL, auth=AUTH, timeout=10) as http:
        for name in names:
            if http.delete(f"/api/connections/{urllib.parse.quote(name, safe='')}").status_code in (200, 204):
                closed += 1
    return closed


def test_a_retry_the_delay_queue_refuses_is_dead_lettered_not_lost(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    worker = start(edujobs_env, redis_key)
    try:
        # Given maintenance.DQ refuses every publish (a max-length 0, reject-publish policy)
        with refusing(amqp_url, "maintenance.DQ"):
            # When a message fails transiently, so that its retry must go to maintenance.DQ
            sent = message("testing.fail_transiently")
            publish(amqp_url, "maintenance", sent)
            # Then it is dead-lettered with the reason, instead of acked and gone
            [dead] = take(amqp_url, "maintenance.XQ", 1)
        assert dead.message()["message_id"] == sent["message_id"]
        assert dead.headers["x-edujobs-reason"] == "requeue_failed"
        assert "TransientError" in dead.headers["x-edujobs-error"]
        assert recorded(redis_key) == ["attempt"]
        assert depth(amqp_url, "maintenance") == 0
    finally:
        worker.stop()


def test_a_message_interrupted_by_shutdown_goes_back_to_its_queue(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    worker = start(edujobs_env, redis_key)
    try:
        # Given a long job running, and maintenance.DQ refusing publishes (nothing needs it)
        sent = message("testing.slow", value="long", seconds=120)
        publish(amqp_url, "maintenance", sent)
        wait_until(lambda: recorded(redis_key) == ["start:long"], what="the long job started")
        with refusing(amqp_url, "maintenance.DQ"):
            # When the worker is stopped (a deploy), which interrupts the job
            worker.stop()
            # Then the job is back on its queue, ready, neither acked nor dead-lettered
            assert depth(amqp_url, "maintenance") == 1
            assert depth(amqp_url, "maintenance.XQ") == 0
        # And the next worker takes it up, its retries untouched
        worker = start(edujobs_env, redis_key)
        wait_until(lambda: recorded(redis_key) == ["start:long", "start:long"], what="the job running again")
    finally:
        worker.kill()


def test_a_late_ack_from_a_closed_channel_does_not_ack_a_new_delivery(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given a worker with one thread running a job A (of low priority)
    worker = start(edujobs_env, redis_key)
    try:
        first = message("testing.slow", value="A", seconds=8)
        publish(amqp_url, "maintenance", first, priority=1)
        wait_until(lambda: recorded(redis_key) == ["start:A"], what="A started")
        # When RabbitMQ closes the worker's connections while A runs (A goes back to the queue), and
        # a job B that fails for good arrives meanwhile with a higher priority: on the new channel
        # B is delivery tag 1, the tag A had on the old one
        assert close_consumer_connections(amqp_url, "maintenance") >= 1
        second = message("testing.fail_permanently", user_id=4)
        publish(amqp_url, "maintenance", second, priority=9)
        # Then A's late ack, from the closed channel, acks nothing: B runs and is dead-lettered with
        # its reason (acked by A's ack, B's dead letter was skipped: B was lost)
        [dead] = take(amqp_url, "maintenance.XQ", 1, timeout=60)
        assert dead.message()["message_id"] == second["message_id"]
        assert dead.headers["x-edujobs-reason"] == "permanent_error"
        # And A, redelivered, runs again and is acked: nothing left anywhere
        wait_until(lambda: recorded(redis_key).count("end:A") == 2, timeout=60, what="A ran again")
        wait_until(lambda: depth(amqp_url, "maintenance") == 0 and consumers(amqp_url, "maintenance") >= 1,
                   what="the queue drained")  # fmt: skip
        assert "attempt" in recorded(redis_key)
    finally:
        worker.stop()
    assert depth(amqp_url, "maintenance") == 0


def test_pausing_a_queue_hands_back_its_prefetched_messages_without_running_them(
    edujobs_env: dict[str, str], amqp_url: str, redis_key: str
) -> None:
    # Given a one-thread worker busy with a job, two more prefetched behind it
    worker = start(edujobs_env, redis_key, EDUJOBS_OPERATOR_POLL_SECONDS="0.2", EDUJOBS_QUEUE_PREFETCH="3")
    try:
        publish(amqp_url, "maintenance", message("testing.slow", value="busy", seconds=3))
        wait_until(lambda: recorded(redis_key) == ["start:busy"], what="the first job started")
        for n in (1, 2):
            publish(amqp_url, "maintenance", message("testing.record", value=f"queued-{n}"))
        wait_until(lambda: depth(amqp_url, "maintenance") == 0, what="both prefetched by the worker")
        # When an operator pauses the queue
        result = CliRunner().invoke(app, ["queues", "pause", "maintenance", "--as", "ana", "--json"])
        assert result.exit_code == 0, result.output
        # Then the running job finishes, and the two prefetched ones go back to RabbitMQ, not run
        wait_until(lambda: depth(amqp_url, "maintenance") == 2, timeout=30, what="both handed back")
        wait_until(lambda: "end:busy" in recorded(redis_key), what="the running job finished")
        assert recorded(redis_key) == ["start:busy", "end:busy"]
        # And once resumed, each of them runs exactly once
        result = CliRunner().invoke(app, ["queues", "resume", "maintenance", "--as", "ana", "--json"])
        assert result.exit_code == 0, json.dumps(result.output)
        wait_until(lambda: len(recorded(redis_key)) == 4, timeout=30, what="both ran after the resume")
        wait_until(lambda: depth(amqp_url, "maintenance") == 0, what="the queue drained")
    finally:
        worker.stop()
    assert sorted(recorded(redis_key)[2:]) == ["queued-1", "queued-2"]
    assert depth(amqp_url, "maintenance") == 0 and depth(amqp_url, "maintenance.XQ") == 0
