"""WorkerTuning: applies worker-level settings that Dramatiq otherwise reads from the environment.

Dramatiq reads ``dramatiq_queue_prefetch`` at import; edujobs takes it from its own settings instead,
so that one place (``brokers.settings``) configures everything.
"""

from __future__ import annotations

from dramatiq import Broker, Worker
from dramatiq.middleware import Middleware


class WorkerTuning(Middleware):
    """Sets the worker's queue prefetch (0 keeps Dramatiq's default of 2 x threads)."""

    def __init__(self, *, queue_prefetch: int = 0) -> None:
        self.queue_prefetch = queue_prefetch

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self.queue_prefetch:
            worker.queue_prefetch = self.queue_prefetch
