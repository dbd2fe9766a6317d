"""WorkerTuning: applies worker-level settings that Dramatiq otherwise reads from the environment,
and readies the worker process's memory before its consumers start.

Dramatiq reads ``dramatiq_queue_prefetch`` at import; edujobs takes it from its own settings instead,
so that one place (``brokers.settings``) configures everything.

At boot, once every module is imported, the objects alive then (modules, classes, SQLAlchemy's and
pydantic's tables: some 120,000 in a worker) are moved out of the garbage collector's reach with
``gc.freeze()``. They live as long as the process does, and without this each full collection walks
them all again: about a tenth of a second with the GIL held, every thread of the worker stopped.
"""

from __future__ import annotations

import gc
import logging

from dramatiq import Broker, Worker
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


class WorkerTuning(Middleware):
    """Sets the worker's queue prefetch (0 keeps Dramatiq's default of 2 x threads) and freezes the
    objects of the booted process out of the garbage collector's full collections."""

    def __init__(self, *, queue_prefetch: int = 0, freeze_boot_objects: bool = True) -> None:
        self.queue_prefetch = queue_prefetch
        self.freeze_boot_objects = freeze_boot_objects

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self.queue_prefetch:
            worker.queue_prefetch = self.queue_prefetch
        # Every module is imported and no consumer runs yet: what exists now is the process's
        # permanent furniture, and the collection before the freeze holds up no message.
        if self.freeze_boot_objects:
            gc.collect()
            gc.freeze()
            logger.debug("Froze %d boot objects out of the garbage collector.", gc.get_freeze_count())

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # A process that runs on (tests, an embedded worker) gets its objects collectable again.
        if self.freeze_boot_objects:
            gc.unfreeze()
