"""Circuit breakers end to end: a provider that goes down opens its breaker in the worker; messages
that arrive then wait for it to half-open, spend no retry, are not dead-lettered, and go out once
the provider is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.amqp import depth, dramatiq_message, publish, take
from tests.fakes.http import FakeServer, Recorded, Reply
from tests.rabbitmq_policies import refusing
from tests.services import require, unique
from tests.worker import WorkerProcess

KEY = b"test-signing-key"
REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeProvider:
    """A provider that answers 503 while ``up`` is False, 200 after; it keeps every request with
    the status it got."""

    def __init__(self) -> None:
        self.up = False
        self.answered: list[tuple[dict[str, Any], int]] = []
        self._lock = threading.Lock()
        self.server = FakeServer(self._reply).start()

    def _reply(self, request: Recorded) -> Reply:
        status = 200 if self.up else 503
        with self._lock:
            self.answered.append((request.json(), status))
        return Reply(status, {"ok": self.up})

    def wait_for(self, count: int, status: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                bodies = [body for body, got in self.answered if got == status]
            if len(bodies) >= count:
                return bodies
            time.sleep(0.05)
        raise AssertionError(f"expected {count} requests answered {status}, got {self.answered}")


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.server.stop()


@pytest.fixture
def worker(edujobs_env: dict[str, str], provider: FakeProvider) -> Iterator[WorkerProcess]:
    require("Redis", "127.0.0.1", 6379)
    namespace = unique("edujobs-test-breaker")
    env = {
        **edujobs_env,
        "EDUJOBS_TEST_PROVIDER_URL": provider.server.url,
        "EDUJOBS_REDIS_URL": REDIS_URL,
        "EDUJOBS_BREAKER_NAMESPACE": namespace,
        "EDUJOBS_BREAKER_FAIL_MAX": "3",
        "EDUJOBS_BREAKER_RESET_TIMEOUT": "2",
    }
    process = WorkerProcess(env, threads=2, module="tests.e2e.actors_breaker").wait_ready()
    yield process
    process.stop()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)


def send(url: str, actor: str, name: str) -> None:
    publish(url, "notifications", dramatiq_message(actor, "notifications", {"name": name}, key=KEY))


def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.output():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the worker's log:\n{worker.output()[-3000:]}")
        time.sleep(0.05)


def test_messages_wait_for_an_open_breaker_without_spending_retries(
    worker: WorkerProcess, provider: FakeProvider, amqp_url: str
) -> None:
    # Given a provider that answers 503: three sends fail (3 failures open the breaker)
    for n in range(3):
        send(amqp_url, "breaker_testing.send", f"fail-{n}")
    provider.wait_for(3, 503)
    wait_for_log(worker, "Circuit breaker sendgrid: closed -> open.")
    # When the provider comes back, and four messages that allow no retry at all arrive while the
    # breaker is still open: two whose actor guards its call, two whose actor declares the breaker
    provider.up = True
    later = {"guarded-1", "guarded-2", "declared-1", "declared-2"}
    for name in sorted(later):
        actor = "breaker_testing.send_once" if name.startswith("guarded") else "breaker_testing.send_declared"
        send(amqp_url, actor, name)
    # Then each of them reaches the provider once, after the breaker half-opened and closed
    sent = {body["name"]: body for body in provider.wait_for(4, 200) if body["name"] in later}
    assert set(sent) == later
    wait_for_log(worker, "Circuit breaker sendgrid: half-open -> closed.")
    # And each was delayed by the breaker, not retried: its retry count is untouched
    for body in sent.values():
        assert body["retries"] == 0, body
        assert body["circuit_delays"] >= 1, body
    # And nothing was dead-lettered (with max_retries=0, a spent retry would have been)
    assert depth(amqp_url, "notifications.XQ") == 0
    log = worker.output()
    assert "delayed" in log and "the sendgrid circuit breaker is open" in log
    # (the third "fail-" message's own failure may be logged just after the breaker opened)
    while_open = log.split("closed -> open.", 1)[1].split("half-open", 1)[0]
    for actor in ("breaker_testing.send_once", "breaker_testing.send_declared"):
        assert f"Failed to process message {actor}" not in while_open


@pytest.mark.faults
def test_a_message_whose_breaker_delay_is_refused_is_dead_lettered_not_run(
    edujobs_env: dict[str, str], provider: FakeProvider, amqp_url: str
) -> None:
    # Given notifications.DQ refusing publishes, and a worker whose sendgrid breaker, once open,
    # stays open a minute
    namespace = unique("edujobs-test-breaker")
    env = {**edujobs_env, "EDUJOBS_TEST_PROVIDER_URL": provider.server.url, "EDUJOBS_REDIS_URL": REDIS_URL,
           "EDUJOBS_BREAKER_NAMESPACE": namespace, "EDUJOBS_BREAKER_FAIL_MAX": "3",
           "EDUJOBS_BREAKER_RESET_TIMEOUT": "60"}  # fmt: skip
    worker = WorkerProcess(env, threads=2, module="tests.e2e.actors_breaker").wait_ready()
    try:
        with refusing(amqp_url, "notifications.DQ"):
            # When three sends fail (the breaker opens), their retries cannot be enqueued either
            for n in range(3):
                send(amqp_url, "breaker_testing.send", f"fail-{n}")
            provider.wait_for(3, 503)
            wait_for_log(worker, "Circuit breaker sendgrid: closed -> open.")
            provider.up = True
            # And a message that declares the breaker arrives while it is open
            send(amqp_url, "breaker_testing.send_declared", "while-refused")
            # Then all four are dead-lettered with the reason, none acked as if retried or delayed
            dead = {d.message()["kwargs"]["name"]: d for d in take(amqp_url, "notifications.XQ", 4)}
        assert {d.headers["x-edujobs-reason"] for d in dead.values()} == {"requeue_failed"}
        assert set(dead) == {"fail-0", "fail-1", "fail-2", "while-refused"}
        assert "could not be enqueued" in dead["while-refused"].headers["x-edujobs-error"]
        # And the declared one never ran while its breaker was open: the provider did not see it
        assert all(body["name"] != "while-refused" for body, _ in provider.answered)
    finally:
        worker.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
