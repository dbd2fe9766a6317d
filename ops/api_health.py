"""``/readyz``'s answer: RabbitMQ and the database answer, checked at most once per ``ttl`` seconds.

Each check opens a connection to RabbitMQ (an AMQP handshake: a TCP connection, a login and a
channel's worth of server work) and takes a database connection. Asked per request, a probe loop or
anyone hammering ``/readyz`` made the API open RabbitMQ connections as fast as it could answer, which
a broker under pressure pays for. The answer is kept for ``ttl`` seconds (5 by default: a probe
every 10 s sees fresh figures, a failure is seen within one probe), and concurrent requests while a
check runs wait for it and share its answer instead of starting their own. ``ops.limits`` also
rate-limits ``/readyz`` per client address.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text

from brokers.health import check_rabbitmq

#: How long one answer of ``/readyz`` is served again.
READY_TTL_SECONDS = 5.0


class Readiness:
    """RabbitMQ and the database answer (each ``"ok"`` or what is wrong), cached for ``ttl``."""

    def __init__(
        self,
        rabbitmq_url: str,
        engine: Engine,
        *,
        ttl: float = READY_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rabbitmq_url = rabbitmq_url
        self.engine = engine
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._answer: dict[str, str] | None = None
        self._until = 0.0

    def checks(self) -> dict[str, str]:
        """The latest answer, checked again once it is older than ``ttl`` (by one caller at a time:
        the others wait for its answer)."""
        with self._lock:
            if self._answer is None or self.clock() >= self._until:
                self._answer = self._check()
                self._until = self.clock() + self.ttl
            return dict(self._answer)

    def _check(self) -> dict[str, str]:
        checks = {"rabbitmq": check_rabbitmq(self.rabbitmq_url, timeout=2.0) or "ok"}
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as e:
            checks["database"] = f"unreachable ({type(e).__name__})"
        return checks
