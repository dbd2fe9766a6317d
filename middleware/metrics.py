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

import bisect
import collections
import contextlib
import logging
import multiprocessing
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

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


@dataclass(frozen=True, eq=False)
class _ActorSeries:
    in_flight: Gauge
    duration: Histogram
    retries: Counter
    outcomes: dict[str, Counter]


@dataclass
class _SeriesTotals:
    """One series' changes since the last flush."""

    in_flight: int = 0
    retries: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)

    def apply(self, series: _ActorSeries) -> None:
        if self.in_flight:
            series.in_flight.inc(self.in_flight)
        if self.retries:
            series.retries.inc(self.retries)
        for outcome, count in self.outcomes.items():
            series.outcomes[outcome].inc(count)
        if self.durations:
            observe_many(series.duration, self.durations)


def observe_many(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe`` for each value, with one write per bucket and one for the sum."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another prometheus-client layout
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        index = bisect.bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    total.inc(sum(values))
    for index, count in counts.items():
        buckets[index].inc(count)


#: The proxy attribute holding an attempt's start: (perf_counter at start, retries then, series).
_ATTEMPT = "_edujobs_metrics_attempt"
#: Seconds between two applications of the pending per-message changes (``Metrics.flush``).
FLUSH_SECONDS = 1.0


class Metrics(Middleware):
    """Counts messages by queue, actor and outcome, times them, and tracks in-flight messages,
    retries and dead letters; under the dramatiq CLI, in files shared by the pool's processes."""

    def __init__(
        self,
        *,
        directory: str | None = None,
        exposition: Callable[[], int] | None = None,
        registry: CollectorRegistry | None = None,
        flush_interval: float = FLUSH_SECONDS,
    ) -> None:
        self.directory = directory
        self.exposition = exposition
        self.flush_interval = flush_interval
        self.pool_directory: str | None = None
        #: (series, outcome, duration, started, spent): outcome None is an attempt starting;
        #: ``started`` says whether the ending attempt's start was counted in flight.
        self._pending: collections.deque[tuple[_ActorSeries, str | None, float | None, bool, bool]] = (
            collections.deque()
        )
        self._stop = threading.Event()
        self._use(MetricSet(registry if registry is not None else CollectorRegistry()))

    @property
    def registry(self) -> CollectorRegistry:
        """This process's metrics, with every pending change applied."""
        self.flush()
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
        self.flush()  # what the flusher, stopped in before_worker_shutdown, had not applied
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
        message.__dict__[_ATTEMPT] = (time.perf_counter(), retries if isinstance(retries, int) else 0, series)
        self._pending.append((series, None, None, True, False))

    def _end(self, message: MessageProxy, outcome: str, *, timed: bool = True, spent: bool = False) -> None:
        # One append per message end; ``flush`` turns them into the metric writes.
        attempt = message.__dict__.pop(_ATTEMPT, None)
        if attempt is None:
            data = message._message
            self._pending.append((self._of(data.queue_name, data.actor_name), outcome, None, False, False))
            return
        duration = time.perf_counter() - attempt[0] if timed else None
        self._pending.append((attempt[2], outcome, duration, True, spent))

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        failed = message.failed
        if exception is None and failed:
            # A middleware failed the message before its actor ran, without skipping it.
            self._end(message, "dead_lettered", timed=False)
            return
        options = message._message.options
        if exception is None:
            self._end(message, "succeeded")
            schedule = options.get(SCHEDULE_OPTION)
            if isinstance(schedule, str) and schedule:
                self.metrics.schedule_last_success.labels(schedule).set(time.time())
            return
        # Retries counts an exhausted attempt too before failing the message: only a message that
        # is not failed was scheduled to run again.
        attempt = message.__dict__.get(_ATTEMPT)
        retries = options.get("retries", 0)
        spent = attempt is not None and isinstance(retries, int) and retries > attempt[1]
        if failed:
            self._end(message, "failed")
        elif spent:
            self._end(message, "retried", spent=True)
        elif isinstance(exception, Shutdown):
            self._end(message, "retried")  # requeued without spending a retry
        else:
            self._end(message, "failed")  # acked without a retry (no Retries middleware)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._end(message, "dead_lettered" if message.failed else "skipped", timed=False)

    # -- applying the pending changes ---------------------------------------------------------------

    def flush(self) -> int:
        """Apply the per-message changes recorded since the last flush; return how many.

        Hooks only append a tuple per message start and end (``deque.append`` is atomic); the
        metric values are written here, once per series and interval, rather than five times per
        message, each under prometheus-client's process-wide lock (and, under the CLI, into an
        mmapped file). Runs every ``flush_interval`` seconds on a thread of its own, at shutdown,
        and before ``registry`` is read."""
        pending = self._pending
        count = len(pending)
        if not count:
            return 0
        totals: dict[_ActorSeries, _SeriesTotals] = {}
        for _ in range(count):
            series, outcome, duration, started, spent = pending.popleft()
            total = totals.get(series)
            if total is None:
                total = totals[series] = _SeriesTotals()
            if outcome is None:
                total.in_flight += 1
                continue
            total.in_flight -= started
            total.retries += spent
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + 1
            if duration is not None:
                total.durations.append(duration)
        for series, total in totals.items():
            total.apply(series)
        return count

    def _run_flusher(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                logger.exception("Could not apply the pending metric changes.")

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        threading.Thread(target=self._run_flusher, name="edujobs-metrics", daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

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
