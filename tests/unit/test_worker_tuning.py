"""WorkerTuning sets the prefetch and freezes the boot objects out of the collector while a worker runs."""

from __future__ import annotations

import gc

from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from middleware.worker_tuning import WorkerTuning


def test_boot_objects_are_frozen_while_the_worker_runs_and_released_after() -> None:
    broker = StubBroker(middleware=[WorkerTuning(queue_prefetch=3)])
    worker = Worker(broker, worker_threads=1)
    worker.start()
    try:
        assert worker.queue_prefetch == 3
        assert gc.get_freeze_count() > 1000
    finally:
        worker.stop()
    assert gc.get_freeze_count() == 0


def test_freezing_can_be_left_off() -> None:
    broker = StubBroker(middleware=[WorkerTuning(freeze_boot_objects=False)])
    worker = Worker(broker, worker_threads=1)
    worker.start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        worker.stop()
