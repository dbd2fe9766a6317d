"""Circuit-breaker benchmark: what guarding a slow provider call costs 8 threads.

Eight threads (a worker's default) each call a fake provider that answers after 50 ms, over HTTP
on loopback, as a notification actor calls SendGrid. Three contenders, side by side:

- ``no_breaker``: the bare call;
- ``edujobs_guard``: the call inside ``middleware.breaker_storage.guard`` with its state in Redis
  (the production set-up: pybreaker's ``CircuitRedisStorage``, shared by every worker process);
- ``pybreaker_call``: the same call through pybreaker's own ``CircuitBreaker.call``, which holds the
  breaker's lock for the whole call and so serialises the threads (about 1/8 of the rate).

Target: ``edujobs_guard`` / ``no_breaker`` >= 0.90.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pybreaker
import redis

from bench.harness import (
    Comparison,
    ComparisonResult,
    Contender,
    Measurement,
    RatioSpec,
    Scale,
    run_side_by_side,
    summarise,
)
from bench.noop import DEFAULT_REDIS_URL
from middleware.breaker_storage import BreakerRegistry
from tests.fakes.http import FakeServer, Recorded, Reply

THREADS = 8
LATENCY_SECONDS = 0.05
TARGET = 0.90


def _slow_ok(request: Recorded) -> Reply:
    return Reply(200, {"ok": True}, delay=LATENCY_SECONDS)


def _threaded(calls_per_thread: int, call: Callable[[httpx.Client], None], url: str) -> Measurement:
    """Run ``calls_per_thread`` calls in each of ``THREADS`` threads; time the whole."""
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def work() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            barrier.wait()
            try:
                for _ in range(calls_per_thread):
                    call(client)
            except BaseException as e:  # reported below: a benchmark that failed has no figure
                errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if errors:
        raise AssertionError(f"a provider call failed: {errors[0]!r}")
    return Measurement(count=calls_per_thread * THREADS, seconds=seconds, cpu_seconds=cpu)


def _post(client: httpx.Client) -> None:
    client.post("/v3/mail/send", json={"to": "bench"}).raise_for_status()


def run(scale: Scale) -> ComparisonResult:
    calls = scale.pick(full=40, quick=8)
    server = FakeServer(_slow_ok).start()
    namespace = f"edujobs-bench-breaker-{time.time_ns()}"
    registry = BreakerRegistry(redis_url=DEFAULT_REDIS_URL, namespace=namespace, fail_max=5)
    plain_breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    def guarded(client: httpx.Client) -> None:
        with registry.guard("sendgrid"):
            _post(client)

    def through_pybreaker(client: httpx.Client) -> None:
        plain_breaker.call(_post, client)

    contenders = [
        Contender(
            "edujobs_guard", "edujobs guard (state in Redis)", lambda: _threaded(calls, guarded, server.url)
        ),
        Contender("no_breaker", "no breaker", lambda: _threaded(calls, _post, server.url)),
        Contender(
            "pybreaker_call",
            "pybreaker CircuitBreaker.call",
            lambda: _threaded(max(1, calls // 4), through_pybreaker, server.url),
        ),
    ]
    try:
        measurements = run_side_by_side(contenders, scale.rounds)
    finally:
        server.stop()
        client = redis.Redis.from_url(DEFAULT_REDIS_URL)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    return summarise(
        name="breaker",
        title=f"Provider calls, {THREADS} threads, {LATENCY_SECONDS * 1000:.0f} ms provider latency",
        contenders=contenders,
        measurements=measurements,
        ratios=[
            RatioSpec("edujobs guard / no breaker", "edujobs_guard", "no_breaker", TARGET),
            RatioSpec("pybreaker call / no breaker", "pybreaker_call", "no_breaker"),
        ],
        notes=[
            "calls/s over all threads; pybreaker's call holds its lock across the call (serialised)",
            "CPU us/msg is this process's CPU time per call",
        ],
    )


COMPARISON = Comparison(name="breaker", title="Circuit breaker around a slow provider", run=run)
