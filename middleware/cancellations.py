"""Cancellations: a worker skips the messages of jobs an operator cancelled (``edujobs jobs cancel``).

A cancelled job is a ``cancelled`` row in the job store, written by the CLI or the HTTP API, whether
or not a worker had seen the message yet. Every ``poll`` seconds a background thread asks
``cancelled_since(t)`` (handed in by ``brokers.setup``: the job store) for the ids cancelled since
its last look, so checking a message costs a set lookup, not a query. A message whose id is in the
set is skipped before its actor runs: it is acknowledged, not retried and not dead-lettered.

A job cancelled while it runs is the actor's to stop: long actors check at each progress point
(``actors.media.actors.cancellation_check``).

A job cancelled less than one poll before a worker takes its message may still run; the window is
``poll`` seconds (1 by default). If ``cancelled_since`` fails (the database is down), messages run:
the last known cancellations still apply and the failure is logged once per outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from dramatiq import Broker, MessageProxy, Worker
from dramatiq.middleware import Middleware, SkipMessage

logger = logging.getLogger(__name__)

#: How far back the first look goes: a cancellation older than this has long been acted on.
LOOKBACK_SECONDS = 7 * 86_400
#: Each look reaches this far before the previous one (clock skew between hosts, late commits).
MARGIN_SECONDS = 30.0


class Cancellations(Middleware):
    """Skips messages whose job was cancelled."""

    def __init__(
        self,
        *,
        cancelled_since: Callable[[float], Iterable[tuple[str, float]]],
        poll: float = 1.0,
        lookback: float = LOOKBACK_SECONDS,
    ) -> None:
        self.cancelled_since = cancelled_since
        self.poll = poll
        self.lookback = lookback
        self.cancelled: dict[str, float] = {}
        self._since: float | None = None
        self._stop = threading.Event()
        self._failing = False

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Before the consumers start: the first message a worker takes is already checked.
        self._stop.clear()
        self.refresh()
        threading.Thread(target=self._run, name="edujobs-cancellations", daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.message_id in self.cancelled:
            logger.info("Skipping %s (%s): the job was cancelled.", message.message_id, message.actor_name)
            raise SkipMessage(f"job {message.message_id} was cancelled")

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.refresh()

    def refresh(self) -> int:
        """Read the cancellations made since the last look; return how many are known."""
        now = time.time()
        since = self._since if self._since is not None else now - self.lookback
        try:
            found = list(self.cancelled_since(since))
        except Exception:
            if not self._failing:
                logger.warning("Cannot read cancelled jobs; keeping the last known ones.", exc_info=True)
            self._failing = True
            return len(self.cancelled)
        self._failing = False
        for message_id, at in found:
            self.cancelled[message_id] = at
        # Later looks overlap by MARGIN_SECONDS: hosts' clocks and commit order differ slightly.
        self._since = now - MARGIN_SECONDS
        horizon = now - self.lookback
        if len(self.cancelled) > 1000:
            self.cancelled = {mid: at for mid, at in self.cancelled.items() if at >= horizon}
        return len(self.cancelled)
