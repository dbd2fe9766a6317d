"""QueuePauses: a worker stops taking the messages of a paused queue, without losing any.

Every ``poll`` seconds a background thread asks ``paused_queues()`` (handed in by ``brokers.setup``:
the operators' flags in the database) which queues are paused. For such a queue it pauses the
worker's consumer threads of the queue and of its delay queue (Dramatiq's ``ConsumerThread.pause``)
and tells the broker (``broker.paused_queues``), whose consumer then stops fetching: the consumer
is closed and the messages it had prefetched go back to RabbitMQ, ready, for when the queue is
resumed. Messages already handed to a worker thread finish. Resuming restarts the consumers within
one poll.

If ``paused_queues()`` fails (the database is down), the last known state is kept and the failure
logged once per outage: a pause never lapses silently, and a worker never stops for lack of an answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Set

from dramatiq import Broker, Worker
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class QueuePauses(Middleware):
    """Pauses and resumes a worker's consumers as operators pause and resume queues."""

    def __init__(self, *, paused_queues: Callable[[], Set[str]], poll: float = 2.0) -> None:
        self.paused_queues = paused_queues
        self.poll = poll
        self._paused: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Before the consumers start: a consumer of a queue paused already takes nothing from it
        # (EdujobsConsumer reads the broker's flag); its thread is paused once it exists.
        paused = self._read()
        if paused is not None:
            broker.paused_queues = paused  # type: ignore[attr-defined]

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        self.refresh(broker, worker)
        self._thread = threading.Thread(
            target=self._run, args=(broker, worker), name="edujobs-queue-pauses", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def _run(self, broker: Broker, worker: Worker) -> None:
        while not self._stop.wait(self.poll):
            self.refresh(broker, worker)

    def _read(self) -> frozenset[str] | None:
        """The paused queues, or None when they cannot be read (said once per outage)."""
        try:
            paused = frozenset(self.paused_queues())
        except Exception:
            if not self._failing:
                logger.warning("Cannot read the paused queues; keeping the last known state.", exc_info=True)
            self._failing = True
            return None
        self._failing = False
        return paused

    def refresh(self, broker: Broker, worker: Worker) -> frozenset[str]:
        """Read the paused queues and apply them to ``worker``; return them."""
        paused = self._read()
        if paused is None:
            return self._paused
        if paused == self._paused:
            return paused
        # Threads pause before the broker's flag is set and resume after it is cleared, so that a
        # consumer told "paused" by the broker always belongs to a paused thread (which then stops).
        for name, thread in list(worker.consumers.items()):
            queue = q_name(name)
            if queue in paused and not thread.paused:
                thread.pause()
                logger.info("Queue %s is paused: its consumer %s stops taking messages.", queue, name)
        broker.paused_queues = paused  # type: ignore[attr-defined]  # read by EdujobsConsumer
        for name, thread in list(worker.consumers.items()):
            queue = q_name(name)
            if queue not in paused and thread.paused:
                thread.resume()
                logger.info("Queue %s is resumed: its consumer %s takes messages again.", queue, name)
        self._paused = paused
        return paused
