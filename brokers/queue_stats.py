"""Queue depths from RabbitMQ's management HTTP API, served as Prometheus gauges at scrape time.

For each queue ``Q`` (the domains' and the event handlers') (one ``GET /api/queues/{vhost}`` per read):

- ``ready``: messages waiting in ``Q``; ``unacked``: messages of ``Q`` that workers hold (prefetched
  or running);
- ``delayed``: every message of ``Q.DQ`` (Dramatiq keeps delayed messages unacked in worker memory);
- ``waiting``: messages parked in ``Q.park`` (delays longer than the park threshold; and in the
  ``Q.wait`` of an earlier version, until it drains);
- ``dead``: messages in the dead-letter queue ``Q.XQ``;
- the age of ``Q``'s oldest ready message, from RabbitMQ's ``head_message_timestamp``, which exists
  only when messages carry the AMQP ``timestamp`` property (0 when ``Q`` is empty, absent when unknown);
- the age of the oldest dead letter of ``Q.XQ`` (the same way: edujobs dates every dead letter) and
  the TTL RabbitMQ applies there (its ``x-message-ttl``), so that an alert fires before letters
  expire that the daily archival (``maintenance.archive_dead_letters``) did not take.

RabbitMQ refreshes these figures every ``collect_statistics_interval`` (5 s by default). Nothing here
consumes or requeues a message, so dead-letter queues keep their order.

``run_metrics_server`` is the worker pool's metrics process: the dramatiq CLI runs it as a fork of the
pool (``middleware.metrics.Metrics.forks``); it serves the pool's metrics and these gauges.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric

from brokers.topology import ALL_QUEUES, dead_letter_queue, delay_queue, legacy_wait_queue, park_queue
from contracts.errors import EdujobsError

logger = logging.getLogger(__name__)

COLUMNS = (
    "name,messages,messages_ready,messages_unacknowledged,head_message_timestamp,consumers,"
    "message_stats.publish_details.rate,message_stats.ack_details.rate,arguments.x-message-ttl"
)


class QueueStatsError(EdujobsError):
    """Raised when RabbitMQ's management API cannot tell the queue depths."""


@dataclass(frozen=True)
class QueueDepth:
    """One domain queue's depths; None where RabbitMQ has no figure (yet)."""

    queue: str
    ready: int | None = None
    unacked: int | None = None
    delayed: int | None = None
    waiting: int | None = None
    dead: int | None = None
    oldest_age_seconds: float | None = None
    consumers: int | None = None
    #: messages per second published to / acknowledged from the queue (RabbitMQ's recent average)
    publish_rate: float | None = None
    ack_rate: float | None = None
    #: age of the oldest dead letter of ``Q.XQ`` and the TTL after which RabbitMQ drops it
    dead_oldest_age_seconds: float | None = None
    dead_ttl_seconds: float | None = None

    def kinds(self) -> dict[str, int | None]:
        return {
            "ready": self.ready,
            "unacked": self.unacked,
            "delayed": self.delayed,
            "waiting": self.waiting,
            "dead": self.dead,
        }


def vhost_of(amqp_url: str) -> str:
    """The virtual host of an AMQP URL (the first of a ``;``-separated list): its path, URL-decoded;
    ``/`` when the path is empty, as pika does."""
    path = urllib.parse.urlsplit(amqp_url.split(";")[0].strip()).path
    if path in ("", "/"):
        return "/"
    return urllib.parse.unquote(path[1:])


class QueueStatsReader:
    """Reads queue depths of one vhost from the management API (credentials in the URL's userinfo)."""

    def __init__(
        self,
        *,
        management_url: str,
        vhost: str,
        queues: Sequence[str] = ALL_QUEUES,
        timeout: float = 3.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The credentials go in an Authorization header, never in the URL that httpx logs.
        base = httpx.URL(management_url)
        auth = (base.username, base.password) if base.username else None
        base = base.copy_with(userinfo=b"")
        self.url = f"{str(base).rstrip('/')}/api/queues/{urllib.parse.quote(vhost, safe='')}"
        self.vhost = vhost
        self.queues = tuple(queues)
        self.clock = clock
        self._client_options: dict[str, Any] = {"timeout": timeout, "transport": transport, "auth": auth}
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        # Made at the first read, not at start: an httpx client builds a TLS context, a tenth of a
        # second of CPU that a pool's metrics process would otherwise spend as its workers start.
        if self._http is None:
            self._http = httpx.Client(**self._client_options)
        return self._http

    def read(self) -> list[QueueDepth]:
        """Return the depths of every queue, in order; raise ``QueueStatsError`` if RabbitMQ cannot tell."""
        try:
            with self._lock:
                response = self._client().get(self.url, params={"columns": COLUMNS})
            response.raise_for_status()
            listing = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise QueueStatsError(f"cannot read queue depths of vhost {self.vhost!r}: {e}") from None
        if not isinstance(listing, list):
            raise QueueStatsError(f"unexpected answer for vhost {self.vhost!r}: {str(listing)[:200]}")
        by_name = {q["name"]: q for q in listing if isinstance(q, dict) and "name" in q}
        now = self.clock()
        return [self._depth(queue, by_name, now) for queue in self.queues]

    def _depth(self, queue: str, by_name: dict[str, dict[str, Any]], now: float) -> QueueDepth:
        main = by_name.get(queue, {})
        ready = _count(main, "messages_ready")
        dead = by_name.get(dead_letter_queue(queue), {})
        ttl = (dead.get("arguments") or {}).get("x-message-ttl") if isinstance(dead, dict) else None
        return QueueDepth(
            queue=queue,
            ready=ready,
            unacked=_count(main, "messages_unacknowledged"),
            delayed=_count(by_name.get(delay_queue(queue), {}), "messages"),
            waiting=_parked(by_name, queue),
            dead=_count(dead, "messages"),
            oldest_age_seconds=_oldest_age(main, ready, now),
            consumers=_count(main, "consumers"),
            publish_rate=_rate(main, "publish_details"),
            ack_rate=_rate(main, "ack_details"),
            dead_oldest_age_seconds=_oldest_age(dead, _count(dead, "messages_ready"), now),
            dead_ttl_seconds=ttl / 1000 if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _oldest_age(queue: dict[str, Any], ready: int | None, now: float) -> float | None:
    """The age of the queue's oldest ready message: 0 when none is ready, None when unknown."""
    if ready == 0:
        return 0.0
    head = queue.get("head_message_timestamp")
    if ready is None or not isinstance(head, int | float):
        return None
    return max(0.0, now - float(head))


def _rate(queue: dict[str, Any], field: str) -> float | None:
    stats = queue.get("message_stats")
    if not isinstance(stats, dict):
        return 0.0 if queue else None  # no stats yet: nothing published or acknowledged
    details = stats.get(field)
    rate = details.get("rate") if isinstance(details, dict) else None
    return float(rate) if isinstance(rate, int | float) else 0.0


def _parked(by_name: dict[str, dict[str, Any]], queue: str) -> int | None:
    # Q.park, plus what an earlier version's Q.wait still holds until it drains.
    park = _count(by_name.get(park_queue(queue), {}), "messages")
    legacy = _count(by_name.get(legacy_wait_queue(queue), {}), "messages")
    return park if legacy is None else (park or 0) + legacy


def _count(queue: dict[str, Any], field: str) -> int | None:
    value = queue.get(field)
    return value if isinstance(value, int) else None


class QueueStatsCollector:
    """A Prometheus collector that reads the queue depths at each scrape."""

    def __init__(self, reader: QueueStatsReader) -> None:
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "edujobs_queue_stats_up", "1 if RabbitMQ's management API told the queue depths at this scrape."
        )
        try:
            depths = self.reader.read()
        except QueueStatsError as e:
            logger.warning("%s", e)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        messages = GaugeMetricFamily(
            "edujobs_queue_messages",
            "Messages in a domain queue by kind: ready, unacked (held by workers), delayed (Q.DQ), "
            "waiting (parked in Q.park), dead (Q.XQ).",
            labels=["queue", "kind"],
        )
        age = GaugeMetricFamily(
            "edujobs_queue_oldest_message_age_seconds",
            "Age of the oldest ready message of a domain queue (from the messages' AMQP timestamp).",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "edujobs_queue_consumers", "Consumers of a domain queue (0 while it is paused).", labels=["queue"]
        )
        dead_age = GaugeMetricFamily(
            "edujobs_dead_letter_oldest_age_seconds",
            "Age of the oldest dead letter in a domain queue's Q.XQ (0 when it has none).",
            labels=["queue"],
        )
        dead_ttl = GaugeMetricFamily(
            "edujobs_dead_letter_ttl_seconds",
            "How long Q.XQ keeps a dead letter before RabbitMQ drops it (its x-message-ttl).",
            labels=["queue"],
        )
        for depth in depths:
            if depth.consumers is not None:
                consumers.add_metric([depth.queue], depth.consumers)
            for kind, count in depth.kinds().items():
                if count is not None:
                    messages.add_metric([depth.queue, kind], count)
            if depth.oldest_age_seconds is not None:
                age.add_metric([depth.queue], depth.oldest_age_seconds)
            if depth.dead_oldest_age_seconds is not None:
                dead_age.add_metric([depth.queue], depth.dead_oldest_age_seconds)
            if depth.dead_ttl_seconds is not None:
                dead_ttl.add_metric([depth.queue], depth.dead_ttl_seconds)
        return [up, messages, age, consumers, dead_age, dead_ttl]


class QueuePausesCollector:
    """``edujobs_queue_paused``: 1 while an operator has paused a domain queue (``edujobs queues
    pause``), else 0; read at each scrape with ``read`` (the names of the paused queues). Tells a queue
    that has no consumer because it is paused from one whose workers are gone (the alerts)."""

    def __init__(self, read: Callable[[], Iterable[str]], queues: Sequence[str] = ALL_QUEUES) -> None:
        self.read = read
        self.queues = tuple(queues)

    def collect(self) -> Iterable[Metric]:
        try:
            paused = set(self.read())
        except Exception as e:  # the database is down: no figure rather than a wrong one
            logger.warning("Cannot read the paused queues: %s", e)
            return []
        gauge = GaugeMetricFamily(
            "edujobs_queue_paused",
            "1 while an operator has paused the domain queue (edujobs queues pause), else 0.",
            labels=["queue"],
        )
        for queue in self.queues:
            gauge.add_metric([queue], 1 if queue in paused else 0)
        return [gauge]


def paused_queue_reader(database_url: str) -> Callable[[], Iterable[str]]:
    """Reads the names of the paused queues from the database (``store.pauses``)."""
    from store.db import make_engine
    from store.pauses import paused_queues

    engine = make_engine(database_url)
    return lambda: paused_queues(engine).keys()


def metrics_directory(metrics_dir: str | None) -> str:
    """Where worker pools keep their metrics files: the setting, else a directory of the system's temp dir."""
    return metrics_dir or os.path.join(tempfile.gettempdir(), "edujobs-metrics")


def run_metrics_server() -> int:
    """The metrics process of a worker pool (a Dramatiq fork): serve ``/metrics`` on
    ``EDUJOBS_METRICS_HOST:EDUJOBS_METRICS_PORT`` until the pool stops."""
    from brokers.settings import get_settings
    from middleware.metrics import pool_directory, serve_metrics

    settings = get_settings()
    # httpx logs every request at INFO: one line per scrape is noise in the pool's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    reader = QueueStatsReader(
        management_url=settings.rabbitmq_management_url, vhost=vhost_of(settings.rabbitmq_url)
    )
    try:
        return serve_metrics(
            host=settings.metrics_host,
            port=settings.metrics_port,
            directory=pool_directory(metrics_directory(settings.metrics_dir)),
            collectors=[
                QueueStatsCollector(reader),
                QueuePausesCollector(paused_queue_reader(settings.database_url)),
            ],
        )
    except OSError as e:
        logger.error(
            "Cannot serve metrics on %s:%d (%s): give each worker pool its own EDUJOBS_METRICS_PORT, "
            "or set it to 0 to disable metrics.",
            settings.metrics_host,
            settings.metrics_port,
            e,
        )
        return 1
    finally:
        reader.close()
