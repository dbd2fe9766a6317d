"""``edujobs_queue_paused``: which domain queues an operator paused, read at each scrape."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from brokers.queue_stats import QueuePausesCollector


def samples(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["queue"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "edujobs_queue_paused"
    }


def test_paused_queues_read_1_and_the_others_0_at_each_scrape() -> None:
    paused = ["media"]
    registry = CollectorRegistry()
    registry.register(QueuePausesCollector(lambda: list(paused), queues=("media", "reports")))
    assert samples(registry) == {"media": 1, "reports": 0}
    paused.clear()  # resumed: the next scrape says so
    assert samples(registry) == {"media": 0, "reports": 0}


def test_no_figure_when_the_pauses_cannot_be_read() -> None:
    def broken() -> Iterable[str]:
        raise ConnectionError("database down")

    registry = CollectorRegistry()
    registry.register(QueuePausesCollector(broken))
    assert samples(registry) == {}
