"""Heartbeats: each worker process says, every few seconds, that it is alive and what it is doing.

A beat carries the host, pid (and the pid of the ``dramatiq`` master that forked it), pool, queues,
threads, messages in flight, processed and failed since start, and when the process started. A
background thread sends it through the recorder that ``brokers.setup`` hands in
(``store.workers.HeartbeatRecorder`` in production), then, if given, asks ``sample_queues`` to
record the depth of the process's queues (the backlog trend). A process that stops cleanly says so;
one that is killed just stops beating, which is how readers tell a dead one (``stale``).

Nothing here touches a message: a recorder that fails is logged and tried again at the next beat.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from dramatiq import Broker, MessageProxy, Worker
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class HeartbeatRecorder(Protocol):
    def beat(self, beat: dict[str, Any]) -> None:
        """Record this process's beat (the ``worker_heartbeats`` columns)."""

    def stopped(self, worker: str) -> None:
        """Record that the process shut down cleanly."""


POOL_NAME_MAX = 128  # worker_heartbeats.pool


def pool_name(whitelist: object, queues: tuple[str, ...]) -> str:
    """The pool a worker without ``EDUJOBS_WORKER_POOL`` is in: ``all`` when it consumes every queue
    (no ``--queues``), else its queues, shortened to fit the column (``a,b,…+3``: a worker of many
    handler queues had a name too long to be recorded, so it beat no more)."""
    if not whitelist or not queues:
        return "all"
    name = ",".join(queues)
    if len(name) <= POOL_NAME_MAX:
        return name
    kept: list[str] = []
    for queue in queues:
        rest = f",…+{len(queues) - len(kept) - 1}"
        if len(",".join([*kept, queue])) + len(rest) > POOL_NAME_MAX:
            break
        kept.append(queue)
    return f"{','.join(kept)},…+{len(queues) - len(kept)}"


class Heartbeats(Middleware):
    """Counts in-flight, processed and failed messages; beats every ``interval`` seconds."""

    def __init__(
        self,
        *,
        recorder: HeartbeatRecorder,
        interval: float = 5.0,
        pool: str = "",
        sample_queues: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.recorder = recorder
        self.interval = interval
        self.pool = pool
        self.sample_queues = sample_queues
        self._lock = threading.Lock()
        self._in_flight = 0
        self._processed = 0
        self._failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._static: dict[str, Any] = {}
        self._queues: tuple[str, ...] = ()

    # -- hooks ----------------------------------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        started = datetime.now(UTC)
        host = _hostname()
        whitelist = worker.consumer_whitelist or broker.get_declared_queues()
        self._queues = tuple(sorted(q for q in whitelist if not q.endswith((".DQ", ".XQ"))))
        self._static = {
            # Unique across hosts and pid reuse; at most 64 characters (the column).
            "id": f"{host[:40]}-{os.getpid()}-{int(started.timestamp())}",
            "host": host,
            "pid": os.getpid(),
            "parent_pid": os.getppid(),
            "pool": self.pool or pool_name(worker.consumer_whitelist, self._queues),
            "queues": list(self._queues),
            "threads": int(worker.worker_threads),
            "interval_seconds": self.interval,
            "started_at": started,
        }
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edujobs-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
            self._thread = None
        if self._static:
            try:
                self.recorder.stopped(self._static["id"])
            except Exception:  # it will be listed stale instead of stopped: a warning is enough
                logger.warning("Could not record that worker %s stopped.", self._static["id"], exc_info=True)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._in_flight += 1

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._processed += 1
            if exception is not None:
                self._failed += 1

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    # -- the beat -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This process's beat as it stands."""
        with self._lock:
            counts = {"in_flight": self._in_flight, "processed": self._processed, "failed": self._failed}
        return {**self._static, **counts}

    def _run(self) -> None:
        # A database or broker that is down fails every beat: say so once (a warning, not an error
        # for Sentry every few seconds), and once more when it works again.
        failing: set[str] = set()
        sample = self.sample_queues
        while True:
            self._attempt("heartbeat", lambda: self.recorder.beat(self.snapshot()), failing)
            if sample is not None and self._queues:
                self._attempt("queue sample", lambda: sample(self._queues), failing)
            if self._stop.wait(self.interval):
                return

    def _attempt(self, what: str, action: Callable[[], None], failing: set[str]) -> None:
        try:
            action()
        except Exception:
            if what not in failing:
                failing.add(what)
                logger.warning("Could not record the %s of worker %s; trying again every %s s.",
                               what, self._static.get("id"), self.interval, exc_info=True)  # fmt: skip
            return
        if what in failing:
            failing.discard(what)
            logger.info("Recorded the %s of worker %s again.", what, self._static.get("id"))


def _hostname() -> str:
    import socket

    return socket.gethostname()
