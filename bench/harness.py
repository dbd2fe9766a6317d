"""The shared benchmark harness: contenders run side by side, worker subprocesses timed through a
Redis counter, and results summarised as medians and paired ratios.

The machine is shared and noisy, so a comparison never trusts one timing: ``run_side_by_side``
measures every contender once per round, reversing their order every other round so that none
always runs first (or last), and a ratio is the median of the per-round ratios, each taken between
measurements made moments apart. Each measurement also records the CPU time of the process that
did the work, a figure much less sensitive to the neighbours than wall time.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.noop import DEFAULT_REDIS_URL, REDIS_KEY_ENV, REDIS_URL_ENV
from tests.services import RABBITMQ_HOST
from tests.worker import READY, WorkerProcess

logger = logging.getLogger(__name__)

#: How often the Redis counter is read while a worker drains its queue.
POLL_SECONDS = 0.005


class BenchError(RuntimeError):
    """Raised when a benchmark cannot produce a figure (a worker died, a queue did not drain)."""


@dataclass(frozen=True)
class Scale:
    """How big a run is: ``quick`` for a smoke run (small N), and how many rounds."""

    quick: bool = False
    rounds: int = 3

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass(frozen=True)
class Measurement:
    """``count`` messages handled in ``seconds`` of wall time, using ``cpu_seconds`` of CPU time in
    the process that did the work (the producer, or the worker's process tree) when known.

    CPU time per message is far steadier than wall time on a shared machine: it is what the code
    costs, whoever else was running.
    """

    count: int
    seconds: float
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_us_per_message(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / self.count * 1e6


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: ``measure`` runs it once and returns what it did."""

    name: str
    label: str
    measure: Callable[[], Measurement]


@dataclass(frozen=True)
class RatioSpec:
    """A ratio to report, ``numerator`` / ``denominator`` (contender names), with its target."""

    label: str
    numerator: str
    denominator: str
    target: float | None = None


@dataclass(frozen=True)
class ContenderFigures:
    name: str
    label: str
    count: int
    rates: list[float]
    median_rate: float
    cpu_us_per_message: list[float]
    median_cpu_us_per_message: float | None


@dataclass(frozen=True)
class RatioFigures:
    label: str
    numerator: str
    denominator: str
    target: float | None
    per_round: list[float]
    median: float

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.median >= self.target


@dataclass(frozen=True)
class ComparisonResult:
    name: str
    title: str
    unit: str
    contenders: list[ContenderFigures]
    ratios: list[RatioFigures]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    """A registered comparison: ``python -m bench NAME`` runs ``run``."""

    name: str
    title: str
    run: Callable[[Scale], ComparisonResult]


def run_side_by_side(contenders: Sequence[Contender], rounds: int) -> dict[str, list[Measurement]]:
    """Measure each contender once per round, in the given order on odd rounds and reversed on
    even ones (A B B A A B...), so that drift in the machine's load favours no contender and the
    first two contenders, which should be the pair compared most closely, always run back to back."""
    results: dict[str, list[Measurement]] = {c.name: [] for c in contenders}
    for index in range(rounds):
        order = contenders if index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            measurement = contender.measure()
            cpu = measurement.cpu_us_per_message
            logger.info(
                "round %d/%d: %s: %d messages in %.2f s (%.0f msg/s%s)",
                index + 1,
                rounds,
                contender.name,
                measurement.count,
                measurement.seconds,
                measurement.rate,
                "" if cpu is None else f", {cpu:.0f} us CPU/msg",
            )
            results[contender.name].append(measurement)
    return results


def summarise(
    *,
    name: str,
    title: str,
    contenders: Sequence[Contender],
    measurements: Mapping[str, Sequence[Measurement]],
    ratios: Sequence[RatioSpec],
    notes: Sequence[str] = (),
) -> ComparisonResult:
    """Turn per-round measurements into medians and paired per-round ratios."""
    figures = []
    for contender in contenders:
        done = measurements[contender.name]
        rates = [m.rate for m in done]
        cpu = [m.cpu_us_per_message for m in done if m.cpu_us_per_message is not None]
        figures.append(
            ContenderFigures(
                name=contender.name,
                label=contender.label,
                count=done[0].count if done else 0,
                rates=rates,
                median_rate=statistics.median(rates),
                cpu_us_per_message=cpu,
                median_cpu_us_per_message=statistics.median(cpu) if cpu else None,
            )
        )
    ratio_figures = []
    for spec in ratios:
        pairs = zip(measurements[spec.numerator], measurements[spec.denominator], strict=True)
        per_round = [top.rate / bottom.rate for top, bottom in pairs]
        ratio_figures.append(
            RatioFigures(
                label=spec.label,
                numerator=spec.numerator,
                denominator=spec.denominator,
                target=spec.target,
                per_round=per_round,
                median=statistics.median(per_round),
            )
        )
    return ComparisonResult(
        name=name, title=title, unit="msg/s", contenders=figures, ratios=ratio_figures, notes=list(notes)
    )


def time_call(count: int, call: Callable[[], object]) -> Measurement:
    """Time one call that handles ``count`` messages in this process (wall and CPU time)."""
    cpu_started, started = time.process_time(), time.perf_counter()
    call()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Measurement(count=count, seconds=seconds, cpu_seconds=cpu)


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux ``/proc``)."""
    total, pending, seen = 0.0, [pid], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


def check_services() -> None:
    """Raise ``BenchError`` naming the first service the benchmarks need that does not answer."""
    redis_url = os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)
    redis_host = urllib.parse.urlsplit(redis_url).hostname or "127.0.0.1"
    redis_port = urllib.parse.urlsplit(redis_url).port or 6379
    services = [
        ("RabbitMQ", RABBITMQ_HOST, 5672),
        ("RabbitMQ management", RABBITMQ_HOST, 15672),
        ("Redis", redis_host, redis_port),
    ]
    for service, host, port in services:
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as e:
            raise BenchError(f"{service} is not reachable at {host}:{port} ({e})") from None


# -- worker subprocesses and the Redis counter ----------------------------------------------------


class RedisCounter:
    """A Redis key of its own for one run, counting the actor's INCRs."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)
        self.key = f"edujobs-bench:{uuid.uuid4().hex}"
        self._redis = redis.Redis.from_url(self.url)

    def value(self) -> int:
        raw = self._redis.get(self.key)
        return int(raw) if raw is not None else 0

    def env(self) -> dict[str, str]:
        """The environment a worker subprocess needs to count on this key."""
        return {REDIS_URL_ENV: self.url, REDIS_KEY_ENV: self.key}

    def delete(self) -> None:
        self._redis.delete(self.key)
        self._redis.close()


@contextmanager
def redis_counter() -> Iterator[RedisCounter]:
    counter = RedisCounter()
    try:
        yield counter
    finally:
        counter.delete()


def measure_drain(
    *,
    module: str,
    env: Mapping[str, str],
    counter: RedisCounter,
    expected: int,
    processes: int = 1,
    threads: int = 8,
    timeout: float = 300.0,
    queues: tuple[str, ...] = (),
) -> Measurement:
    """Start ``dramatiq MODULE`` on a pre-filled queue and time it from the first to the last INCR.

    The counter is read from the moment the worker is spawned (a ready worker starts consuming
    before its log line can be read), and the rate counts only the messages handled between the
    first reading above zero and the reading that reaches ``expected``.
    """
    worker = WorkerProcess(
        {**env, **counter.env()}, processes=processes, threads=threads, module=module, queues=queues
    )
    try:
        deadline = time.monotonic() + timeout
        first_at: float | None = None
        first_count, first_cpu = 0, 0.0
        while True:
            count = counter.value()
            now = time.perf_counter()
            if first_at is None and count > 0:
                first_at, first_count = now, count
                first_cpu = process_tree_cpu_seconds(worker.process.pid)
            if count >= expected:
                break
            if worker.process.poll() is not None:
                raise BenchError(f"worker {module} exited with {worker.process.returncode}:\n{_tail(worker)}")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{module} handled {count}/{expected} messages in {timeout}s:\n{_tail(worker)}"
                )
            time.sleep(POLL_SECONDS)
        cpu = process_tree_cpu_seconds(worker.process.pid) - first_cpu
        if worker.output().count(READY) < processes:
            raise BenchError(f"worker {module} never said it was ready:\n{_tail(worker)}")
        if first_at is None or now <= first_at or count > expected:
            raise BenchError(f"{module}: {expected} messages drained too fast (or too many) to time")
        return Measurement(count=expected - first_count, seconds=now - first_at, cpu_seconds=cpu)
    finally:
        worker.stop()
        worker.log.unlink(missing_ok=True)


def _tail(worker: WorkerProcess) -> str:
    return worker.output()[-4000:]
