"""Circuit breakers on the real Redis: worker processes share a breaker, and lose Redis gracefully.

Each ``BreakerRegistry`` stands for one worker process; every test has its own key namespace,
deleted afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from contracts.errors import ProviderUnavailableError
from middleware.breaker_storage import Breaker, BreakerRegistry, CircuitOpenError
from tests.services import require, unique

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace() -> Iterator[str]:
    require("Redis", "127.0.0.1", 6379)
    name = unique("edujobs-test-breaker")
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def process(
    namespace: str, url: str = REDIS_URL, *, reset_timeout: float = 60, redis_retry_interval: float = 10
) -> BreakerRegistry:
    """The breakers of one worker process (3 failures open a breaker)."""
    return BreakerRegistry(
        redis_url=url,
        namespace=namespace,
        fail_max=3,
        reset_timeout=reset_timeout,
        redis_retry_interval=redis_retry_interval,
    )


def fail(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ProviderUnavailableError), breaker.guard():
            raise ProviderUnavailableError("503")


def test_two_worker_processes_share_one_breaker(namespace: str) -> None:
    # Given two worker processes and a SendGrid that is down
    first, second = process(namespace), process(namespace)
    heard: list[tuple[str, str | None, str]] = []
    second.add_listener(lambda provider, old, new: heard.append((provider, old, new)))
    # When each sees failures, three in all
    fail(first.get("sendgrid"), 2)
    fail(second.get("sendgrid"))
    # Then the breaker is open in both, and the second refuses calls without making them
    assert first.get("sendgrid").state == "open"
    assert second.is_open("sendgrid")
    with pytest.raises(CircuitOpenError) as refused, second.guard("sendgrid"):
        pytest.fail("the provider was called through an open breaker")
    assert 55 <= refused.value.retry_after <= 61
    assert ("sendgrid", "closed", "open") in heard
    # And the other providers are not affected
    assert not second.is_open("twilio")


def test_a_successful_trial_in_one_process_closes_the_breaker_for_all(namespace: str) -> None:
    first, second = process(namespace, reset_timeout=1), process(namespace, reset_timeout=1)
    fail(first.get("fcm"), 3)
    assert second.is_open("fcm")
    # When the reset timeout has passed (whole seconds in Redis) and the first process's trial succeeds
    time.sleep(1.1)
    with first.guard("fcm"):
        pass
    # Then the second process sees the breaker closed again
    assert second.get("fcm").state == "closed"
    with second.guard("fcm"):
        pass


def test_an_opening_is_claimed_once_across_processes(namespace: str) -> None:
    first, second = process(namespace), process(namespace)
    assert first.claim("sendgrid:2024-01-01T00:00:00") is True
    assert second.claim("sendgrid:2024-01-01T00:00:00") is False
    assert second.claim("sendgrid:2024-01-01T00:05:00") is True


class CuttableProxy:
    """A TCP proxy (to Redis, RabbitMQ...) whose connections can be cut, as a network partition
    would; ``accepted`` counts the connections made through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._sockets.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def test_a_process_that_loses_redis_goes_on_alone_then_shares_again(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker process that reaches Redis through a network that can fail, and another that does not
    proxy = CuttableProxy(("127.0.0.1", 6379))
    try:
        cut_off = process(namespace, f"redis://127.0.0.1:{proxy.port}/0", redis_retry_interval=0.3)
        other = process(namespace)
        fail(cut_off.get("twilio"))
        assert other.get("twilio").storage.counter == 1
        # When its link to Redis is cut, and Twilio keeps failing
        proxy.cut()
        with caplog.at_level(logging.WARNING, logger="middleware.breaker_storage"):
            fail(cut_off.get("twilio"), 2)
        # Then its breaker opened on what it knew (no error, one warning), while the shared one did not
        assert cut_off.get("twilio").state == "open"
        assert other.get("twilio").state == "closed"
        warnings = [r for r in caplog.records if "Redis does not answer" in r.getMessage()]
        assert [r.levelname for r in warnings] == ["WARNING"]
        # When the link comes back (and the retry interval has passed)
        proxy.open = True
        time.sleep(0.4)
        # Then it follows the shared state again: closed, then opened by the other process's failures
        assert cut_off.get("twilio").state == "closed"
        fail(other.get("twilio"), 3)
        assert cut_off.is_open("twilio")
    finally:
        proxy.close()
