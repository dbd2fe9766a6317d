"""JobState: records each message's state (running, succeeded, failed, dead) with timestamps.

Writes are batched: hooks put small updates on an in-process queue and one background thread per
worker process hands them to the recorder (``store.jobs.JobStore`` in production) every
``flush_interval`` seconds, in one transaction. A message's processing never waits on the database;
a crash loses at most the last interval of state, never a message (the ledger, not job state, is what
makes side effects happen once).

The recorder is handed in by ``brokers.setup``; this module knows nothing of the store.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from dramatiq import Broker, MessageProxy, Worker
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

ERROR_LIMIT = 2000


@dataclass(frozen=True)
class JobUpdate:
    """One change of a job's state; ``at`` is a UNIX timestamp in seconds."""

    message_id: str
    state: str
    at: float
    actor_name: str = ""
    queue: str = ""
    attempts: int | None = None
    error: str | None = None
    result_summary: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobRecorder(Protocol):
    def apply(self, updates: list[JobUpdate]) -> None:
        """Persist a batch of updates, in order (later updates of a message win)."""


class JobState(Middleware):
    """Records job states through a recorder, batched on a background thread."""

    def __init__(self, *, recorder: JobRecorder, flush_interval: float = 0.2, max_batch: int = 1000) -> None:
        self.recorder = recorder
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._updates: queue.SimpleQueue[JobUpdate] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- hooks ----------------------------------------------------------------------------------

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._put(message, "running", attempts=int(message.options.get("retries", 0)) + 1)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            summary = result if isinstance(result, dict) else None
            self._put(message, "succeeded", result_summary=summary)
        elif not message.failed:
            # Retries has re-enqueued it; the job is waiting for its next attempt.
            error = f"{type(exception).__name__}: {exception}"[:ERROR_LIMIT]
            self._put(message, "failed", error=error, attempts=int(message.options.get("retries", 0)))

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if not message.failed:
            self._put(message, "enqueued")

    def after_dead_letter(
        self, broker: Broker, queue_name: str, record: dict[str, Any], message: Any | None
    ) -> None:
        if message is None:
            return
        error = f"{record.get('exception_type') or record.get('reason')}: {record.get('error', '')}"
        self._put(message, "dead", error=error[:ERROR_LIMIT], attempts=int(record.get("attempts", 1)))

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Before the consumers start, so that the first messages do not wait on a cold database
        # connection and statement (the recorder's optional ``prepare``).
        prepare = getattr(self.recorder, "prepare", None)
        if prepare is not None:
            try:
                prepare()
            except Exception:
                logger.warning("Could not prepare the job-state recorder; batches will retry.", exc_info=True)
        self.start()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.stop()

    # -- batching -------------------------------------------------------------------------------

    def _put(self, message: Any, state: str, **fields: Any) -> None:
        data = getattr(message, "_message", message)  # skip the proxy's __getattr__ on the hot path
        self._updates.put(
            JobUpdate(data.message_id, state, time.time(), data.actor_name, data.queue_name, **fields)
        )

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="edujobs-job-state", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def flush(self) -> int:
        """Hand every pending update to the recorder now; return how many were written."""
        written = 0
        while True:
            batch: list[JobUpdate] = []
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._updates.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return written
            try:
                self.recorder.apply(batch)
                written += len(batch)
            except Exception:
                logger.exception("Could not record %d job state updates; they are dropped.", len(batch))
                return written
