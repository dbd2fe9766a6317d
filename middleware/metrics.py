"""Metrics: Prometheus metrics of a worker pool, correct with several worker processes.

Per message, by queue and actor: how many were processed and how each ended (``outcome``), how long
the actor took, how many are in flight, how many retries were spent; per queue and reason, how many
dead letters were written; per provider, the circuit breaker's state and its transitions; per
schedule, the time of the last successful run.

Under the dramatiq CLI every worker process of a pool writes its values to files (prometheus-client's
multiprocess mode) in one directory per pool, ``<directory>/pool-<pid of the dramatiq master>``; each
worker process creates it at boot and removes the directories of pools that no longer run. One more
process of the pool (a Dramatiq fork, see ``Middleware.forks``) runs the ``exposition`` callable handed
in by ``brokers.setup``, which serves the sum of those files with ``serve_metrics`` next to the queue
depths of ``brokers.queue_stats``, on the host and port of the settings only (Dramatiq's own Prometheus
middleware binds 0.0.0.0 and reads the environment). Outside the CLI (unit tests, a Worker run
in-process) values stay in the process, in ``registry``.

``record_breaker_state``, ``record_breaker_transition`` and ``record_schedule_success`` let the
circuit breakers and the scheduler record into the process's metrics without holding the middleware.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, NamedTuple

from dramatiq import Broker, MessageProxy, Worker
from dramatiq.middleware import Middleware, Shutdown
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, MetricsHandler, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

#: How a message's processing ended, the ``outcome`` label of ``edujobs_messages_total``.
OUTCOMES = ("succeeded", "retried", "failed", "dead_lettered", "skipped")

#: ``edujobs_circuit_breaker_state``: pybreaker's state names and their values.
BREAKER_STATES = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}

#: A message option naming the schedule that enqueued it: its success sets the schedule's last
#: success time (``edujobs_schedule_last_success_timestamp_seconds``).
SCHEDULE_OPTION = "schedule"

#: Seconds; media jobs run for minutes, notifications for milliseconds.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"),
)  # fmt: skip

POOL_PREFIX = "pool-"


class MetricSet:
    """Every edujobs metric, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "edujobs_messages",
            "Messages processed, by how it ended: succeeded; retried (will run again); failed (the actor "
            "raised and it is dead-lettered); dead_lettered (rejected before the actor ran); skipped.",
            ["queue", "actor", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "edujobs_message_duration_seconds",
            "Time spent processing a message whose actor ran, whatever the outcome.",
            ["queue", "actor"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "edujobs_messages_in_flight",
            "Messages being processed now.",
            ["queue", "actor"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.retries = Counter(
            "edujobs_retries",
            "Retries spent: failed attempts that were scheduled to run again.",
            ["queue", "actor"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "edujobs_dead_letters",
            "Messages written to a dead-letter queue, by reason.",
            ["queue", "reason"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "edujobs_circuit_breaker_state",
            "State of a provider's circuit breaker: 0 closed, 1 half-open, 2 open (the latest transition).",
            ["provider"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.breaker_transitions = Counter(
            "edujobs_circuit_breaker_transitions",
            "Transitions of a provider's circuit breaker, by the state it entered.",
            ["provider", "state"],
            registry=registry,
        )
        self.schedule_last_success = Gauge(
            "edujobs_schedule_last_success_timestamp_seconds",
            "UNIX time at which a scheduled job last succeeded.",
            ["schedule"],
            multiprocess_mode="max",
            registry=registry,
        )


_active: MetricSet | None = None


def record_breaker_state(provider: str, state_name: str) -> None:
    """Set a provider's breaker state (``closed``, ``half-open`` or ``open``) in this process's metrics.

    Does nothing when no ``Metrics`` middleware exists (metrics disabled)."""
    metrics = _active
    value = BREAKER_STATES.get(state_name)
    if metrics is None:
        return
    if value is None:
        logger.warning("Unknown circuit breaker state %r for %s: not recorded.", state_name, provider)
        return
    metrics.breaker_state.labels(provider).set(value)


def record_breaker_transition(provider: str, old_state: str | None, new_state: str) -> None:
    """Count a breaker's transition into ``new_state``; a state heard without a transition (at
    boot, ``old_state`` None, or unchanged) is not one. Does nothing when metrics are disabled."""
    metrics = _active
    if metrics is None or old_state is None or old_state == new_state:
        return
    if new_state not in BREAKER_STATES:
        logger.warning("Unknown circuit breaker state %r for %s: not counted.", new_state, provider)
        return
    # pybreaker says "half-open"; one spelling per label value.
    metrics.breaker_transitions.labels(provider, new_state.replace("_", "-")).inc()


def record_schedule_success(schedule: str, at: float | None = None) -> None:
    """Record that a scheduled job succeeded (now, or at the UNIX time ``at``)."""
    if _active is not None:
        _active.schedule_last_success.labels(schedule).set(time.time() if at is None else at)


@dataclass(frozen=True)
class _ActorSeries:
    in_flight: Gauge
    duration: Histogram
    retries: Counter
    outcomes: dict[str, Counter]


class _Attempt(NamedTuple):
    message_id: str
    started: float
    retries: int
    series: _ActorSeries


#: The attempt running on this worker thread.
_attempt: ContextVar[_Attempt | None] = ContextVar("edujobs_metrics_attempt", default=None)


class Metrics(Middleware):
    """Counts messages by queue, actor and outcome, times them, and tracks in-flight messages,
    retries and dead letters; under the dramatiq CLI, in files shared by the pool's processes."""

    def __init__(
        self,
        *,
        directory: str | None = None,
        exposition: Callable[[], int] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.directory = directory
        self.exposition = exposition
        self.pool_directory: str | None = None
        self._use(MetricSet(registry if registry is not None else CollectorRegistry()))

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    @property
    def forks(self) -> list[Callable[[], int]]:
        return [self.exposition] if self.exposition is not None else []

    def _use(self, metrics: MetricSet) -> None:
        global _active
        self.metrics = metrics
        self._series: dict[tuple[str, str], _ActorSeries] = {}
        self._lock = threading.Lock()
        _active = metrics

    # -- process lifecycle -------------------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        if self.directory is None:
            return
        pool = pool_directory(self.directory)
        if pool is None:
            return  # not a worker process of the dramatiq CLI: values stay in this process
        prepare_pool_directory(self.directory, pool)
        enable_multiprocess(pool)
        self.pool_directory = pool
        # Fresh metrics, so that every value lives in the pool's files.
        self._use(MetricSet(CollectorRegistry()))
        logger.debug("Metrics of this worker process go to %s.", pool)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if self.pool_directory is not None:
            # Drops this process's in-flight gauge; its counters keep counting in the pool's sums.
            mark_process_dead(os.getpid(), self.pool_directory)  # type: ignore[no-untyped-call]

    # -- messages ---------------------------------------------------------------------------------

    def _of(self, queue: str, actor: str) -> _ActorSeries:
        series = self._series.get((queue, actor))
        if series is None:
            with self._lock:
                metrics = self.metrics
                series = _ActorSeries(
                    in_flight=metrics.in_flight.labels(queue, actor),
                    duration=metrics.duration.labels(queue, actor),
                    retries=metrics.retries.labels(queue, actor),
                    outcomes={o: metrics.messages.labels(queue, actor, o) for o in OUTCOMES},
                )
                self._series[(queue, actor)] = series
        return series

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        data = message._message  # skip the proxy's __getattr__ on the hot path
        series = self._of(data.queue_name, data.actor_name)
        retries = data.options.get("retries", 0)
        _attempt.set(
            _Attempt(data.message_id, time.perf_counter(), retries if isinstance(retries, int) else 0, series)
        )
        series.in_flight.inc()

    def _finish(self, message: MessageProxy) -> tuple[_ActorSeries, _Attempt | None]:
        data = message._message
        attempt = _attempt.get()
        if attempt is None or attempt.message_id != data.message_id:
            return self._of(data.queue_name, data.actor_name), None
        _attempt.set(None)
        attempt.series.in_flight.dec()
        return attempt.series, attempt

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        series, attempt = self._finish(message)
        failed = message.failed
        if exception is None and failed:
            # A middleware failed the message before its actor ran, without skipping it.
            series.outcomes["dead_lettered"].inc()
            return
        if attempt is not None:
            series.duration.observe(time.perf_counter() - attempt.started)
        options = message._message.options
        if exception is None:
            series.outcomes["succeeded"].inc()
            schedule = options.get(SCHEDULE_OPTION)
            if isinstance(schedule, str) and schedule:
                self.metrics.schedule_last_success.labels(schedule).set(time.time())
            return
        # Retries counts an exhausted attempt too before failing the message: only a message that
        # is not failed was scheduled to run again.
        retries = options.get("retries", 0)
        spent = attempt is not None and isinstance(retries, int) and retries > attempt.retries
        if failed:
            series.outcomes["failed"].inc()
        elif spent:
            series.retries.inc()
            series.outcomes["retried"].inc()
        elif isinstance(exception, Shutdown):
            series.outcomes["retried"].inc()  # requeued without spending a retry
        else:
            series.outcomes["failed"].inc()  # acked without a retry (no Retries middleware)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        series, _ = self._finish(message)
        series.outcomes["dead_lettered" if message.failed else "skipped"].inc()

    def after_dead_letter(
        self, broker: Broker, queue_name: str, record: dict[str, Any], message: Any | None
    ) -> None:
        reason = record.get("reason")
        self.metrics.dead_letters.labels(queue_name, str(reason or "unknown")).inc()


# -- the pool's directory ---------------------------------------------------------------------------


def pool_directory(base: str) -> str | None:
    """The metrics directory of this process's worker pool, or None outside the dramatiq CLI.

    A pool is one ``dramatiq`` master process: its worker processes and forks are its children."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    return os.path.join(base, f"{POOL_PREFIX}{parent.pid}")


def prepare_pool_directory(base: str, pool: str) -> None:
    """Create ``pool`` and remove the directories of pools whose master no longer runs."""
    os.makedirs(pool, exist_ok=True)
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            pid = entry.name.removeprefix(POOL_PREFIX)
            if entry.path == pool or not entry.name.startswith(POOL_PREFIX) or not pid.isdigit():
                continue
            if not _alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
                logger.debug("Removed the metrics of a stopped worker pool: %s.", entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def enable_multiprocess(directory: str) -> None:
    """Make every metric value created from now on in this process live in ``directory``.

    prometheus-client picks its value class when it is first imported, from the environment; a worker
    process has imported it long before it boots, so the class is switched here explicitly."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # read by the value class for each new value
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


# -- exposition -------------------------------------------------------------------------------------


def make_metrics_server(
    *, host: str, port: int, directory: str | None, collectors: Iterable[Collector] = ()
) -> ThreadingHTTPServer:
    """Bind an HTTP server on ``host:port`` (only there) serving the sum of the pool's values found in
    ``directory`` and the given collectors, on ``/metrics``. Raise ``OSError`` if it cannot bind."""
    registry = CollectorRegistry()
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (ThreadingHTTPServer,), {"address_family": family})
    server: ThreadingHTTPServer = server_class((host, port), MetricsHandler.factory(registry))
    return server


def serve_metrics(
    *, host: str, port: int, directory: str | None, collectors: Iterable[Collector] = ()
) -> int:
    """Serve metrics until the process is stopped (the body of a pool's metrics fork)."""
    server = make_metrics_server(host=host, port=port, directory=directory, collectors=collectors)
    logger.info("Serving metrics on http://%s:%d/metrics.", host, server.server_address[1])
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
