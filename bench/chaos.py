"""The fault harness: ``python -m bench.chaos [--messages N]`` (``make chaos``, ``N=...``).

It measures edujobs' promises under faults: nothing is lost, and an email goes out once. N
``notifications.send_email`` messages (default 10,000, each to its own user) go to a fake SendGrid
(answering 202 after 20 ms), drained by ``dramatiq actors --processes 2 --threads 8`` on a
PostgreSQL database of its own, while the harness, at set points of progress:

1. SIGKILLs the workers (and restarts them, as a supervisor would), three times;
2. closes their RabbitMQ connections through the management API;
3. bounces RabbitMQ (``rabbitmqctl stop_app`` / ``start_app``);
4. stops Redis (the circuit breakers' shared state) for 30 s.

RabbitMQ and Redis are the harness's own (``bench.chaos_services``): the machine's shared ones are
never touched. It then waits until every message is delivered or held, and the queues are empty.

What it prints, per message id (from the ``custom_args`` SendGrid received, and the ledger):

- **delivered**: emails SendGrid received (distinct messages);
- **duplicates**: emails SendGrid received more than once (send_email is ``normal`` priority: the
  policy never resends after an unknown outcome, so every duplicate breaks the promise);
- **unknown outcomes**: ledger rows held as ``unknown`` (a worker died while SendGrid held the
  request), counted apart: how many of them SendGrid did get, and how many it did not (those are
  held back, for an operator; not lost silently);
- **lost**: neither delivered nor held, nor dead-lettered;
- **dead-lettered**: messages in ``notifications.XQ``;
- **seconds after the last fault** until the last message was delivered (or held).

Exit status 0 when lost, duplicates and dead letters are all 0, else 1 (timings are reported, not
asserted). Figures go to ``var/bench/chaos.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from bench.chaos_services import PrivateRabbitMQ, PrivateRedis
from brokers.client import Client
from brokers.topology import dead_letter_queue, delay_queue, park_queue
from store.db import make_engine
from store.migrate import upgrade
from store.models import Delivery, User
from tests.fakes.http import FakeServer, Recorded, Reply
from tests.services import postgres_database
from tests.worker import WorkerProcess

logger = logging.getLogger("bench.chaos")
console = Console()

OUTPUT = Path("var/bench/chaos.json")
LATENCY = 0.02
REDIS_DOWN_SECONDS = 30.0
#: Progress (share of messages delivered) at which each fault strikes.
FAULTS: tuple[tuple[float, str], ...] = (
    (0.10, "kill"),
    (0.25, "close_connections"),
    (0.40, "kill"),
    (0.55, "bounce_rabbitmq"),
    (0.65, "stop_redis"),
    (0.80, "kill"),
)


class StalledError(RuntimeError):
    """Raised when a stage of the run does not complete within the deadline."""


class CountingSendGrid(FakeServer):
    """A fake SendGrid that answers 202 after ``latency`` and counts emails per edujobs message id."""

    def __init__(self, latency: float) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.first_seen: dict[str, float] = {}
        self._count_lock = threading.Lock()

        def reply(request: Recorded) -> Reply:
            message_id = str(request.json().get("custom_args", {}).get("message_id"))
            with self._count_lock:
                self.received[message_id] += 1
                self.first_seen.setdefault(message_id, time.monotonic())
            return Reply(202, None, {"X-Message-Id": f"chaos-{message_id}"}, delay=latency)

        super().__init__(reply)

    def _reply_for(self, request: Recorded) -> Reply:
        return self.default(request)  # no request list: 10,000 bodies need not stay in memory


@dataclass
class Run:
    messages: int
    processes: int
    threads: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    duplicates: int = 0
    unknown: int = 0
    unknown_delivered: int = 0
    unknown_not_delivered: int = 0
    lost: int = 0
    dead_lettered: int = 0
    pending_left: int = 0
    seconds_after_last_fault: float | None = None
    #: From the end of the last worker kill (the fault that leaves claims to recover) to the last
    #: email: how long the survivors took to finish, recovered claims included.
    seconds_after_last_kill: float | None = None
    seconds_total: float = 0.0
    #: What the run was waiting for when it gave up (a stage took longer than --deadline), if so.
    stalled: str | None = None
    unknown_causes: dict[str, int] = field(default_factory=dict)
    worker_logs: list[str] = field(default_factory=list)

    @property
    def promises_kept(self) -> bool:
        return self.stalled is None and self.lost == self.duplicates == self.dead_lettered == 0


class Harness:
    def __init__(self, messages: int, processes: int, threads: int, deadline: float) -> None:
        self.run = Run(messages, processes, threads)
        self.deadline = deadline
        self.rabbitmq = PrivateRabbitMQ()
        self.redis = PrivateRedis()
        self.sendgrid = CountingSendGrid(LATENCY)
        self.workers: WorkerProcess | None = None
        self.env: dict[str, str] = {}
        self.last_fault_end = 0.0
        self.last_kill_end = 0.0
        self.database_url = ""

    def execute(self) -> Run:
        self.sendgrid.start()
        try:
            self.rabbitmq.start()
            self.redis.start()
            with postgres_database() as database_url:
                self.database_url = database_url
                self._prepare(database_url)
                started = time.monotonic()
                ids = self._publish()
                try:
                    self._inflict_faults(ids)
                    self._wait(lambda: self._finished(ids), "every message delivered or held, queues empty")
                except StalledError as e:
                    self.run.stalled = str(e)
                self.run.seconds_total = round(time.monotonic() - started, 1)
                self._count(ids)
                self._stop_workers()
        finally:
            self._stop_workers()
            self.redis.stop()
            self.rabbitmq.stop()
            self.sendgrid.stop()
        return self.run

    def _prepare(self, database_url: str) -> None:
        upgrade(database_url)
        engine = make_engine(database_url)
        rows = [{"id": n, "name": f"Student {n}", "role": "student", "email": f"s{n}@example.edu"}
                for n in range(1, self.run.messages + 1)]  # fmt: skip
        with Session(engine) as session:
            session.execute(insert(User), rows)
            session.commit()
        engine.dispose()
        self.env = {
            "EDUJOBS_ENVIRONMENT": "test",
            "EDUJOBS_RABBITMQ_URL": self.rabbitmq.amqp_url,
            "EDUJOBS_RABBITMQ_MANAGEMENT_URL": self.rabbitmq.management_url,
            "EDUJOBS_DATABASE_URL": database_url,
            "EDUJOBS_REDIS_URL": self.redis.url,
            "EDUJOBS_SENDGRID_HOST": self.sendgrid.url,
            "EDUJOBS_SENDGRID_API_KEY": "SG.chaos",
            "EDUJOBS_SIGNING_KEY": "chaos-signing-key",
            "EDUJOBS_METRICS_PORT": "0",
            "EDUJOBS_LOG_LEVEL": "WARNING",
        }
        self._start_workers()

    def _start_workers(self) -> None:
        self.workers = WorkerProcess(self.env, processes=self.run.processes, threads=self.run.threads)
        self.workers.wait_ready(timeout=120)
        self.run.worker_logs.append(str(self.workers.log))

    def _stop_workers(self) -> None:
        if self.workers is not None:
            self.workers.stop()
            self.workers = None

    def _publish(self) -> list[str]:
        client = Client(self.rabbitmq.amqp_url, signing_key=b"chaos-signing-key")
        try:
            payloads = [{"user_id": n, "template": "welcome"} for n in range(1, self.run.messages + 1)]
            keys = [f"chaos:{n}" for n in range(1, self.run.messages + 1)]
            return client.send_many("notifications.send_email", payloads, idempotency_keys=keys)
        finally:
            client.close()

    def _delivered(self, ids: list[str]) -> int:
        received = self.sendgrid.received
        return sum(1 for message_id in ids if received[message_id])

    def _inflict_faults(self, ids: list[str]) -> None:
        actions: dict[str, Callable[[], str]] = {
            "kill": self._kill,
            "close_connections": lambda: f"{self.rabbitmq.close_connections()} connections closed",
            "bounce_rabbitmq": self._bounce,
            "stop_redis": self._stop_redis,
        }
        redis_back: threading.Thread | None = None
        for share, fault in FAULTS:
            self._wait(lambda share=share: self._delivered(ids) >= share * len(ids), f"{share:.0%} delivered")  # type: ignore[misc]
            at = time.monotonic()
            detail = actions[fault]()
            if fault == "stop_redis":
                redis_back = threading.Thread(target=self._restart_redis, daemon=True)
                redis_back.start()
            else:
                self.last_fault_end = max(self.last_fault_end, time.monotonic())
            self.run.faults.append({"fault": fault, "at_delivered": self._delivered(ids), "detail": detail,
                                    "seconds": round(time.monotonic() - at, 1)})  # fmt: skip
            console.print(f"  fault: {fault} at {share:.0%} ({detail})")
        if redis_back is not None:
            redis_back.join()

    def _kill(self) -> str:
        assert self.workers is not None
        self.workers.kill()
        self._start_workers()
        self.last_kill_end = time.monotonic()
        return "workers SIGKILLed and restarted"

    def _bounce(self) -> str:
        self.rabbitmq.bounce()
        return "stop_app, start_app"

    def _stop_redis(self) -> str:
        self.redis.stop()
        return f"Redis stopped for {REDIS_DOWN_SECONDS:.0f} s"

    def _restart_redis(self) -> None:
        time.sleep(REDIS_DOWN_SECONDS)
        self.redis.start()
        self.last_fault_end = max(self.last_fault_end, time.monotonic())

    def _queues_empty(self) -> bool:
        # The management API's figures lag up to 5 s: only trusted once the ledger agrees.
        names = ("notifications", delay_queue("notifications"), park_queue("notifications"))
        return all(self.rabbitmq.queue(name).get("messages", 1) == 0 for name in names)

    def _unknown_causes(self) -> dict[str, int]:
        """Why each unknown outcome was held (its ledger error, cut before any detail)."""
        engine = make_engine(self.database_url)
        try:
            with Session(engine) as session:
                errors = session.scalars(select(Delivery.error).where(Delivery.status == "unknown"))
                return dict(collections.Counter((error or "").split(":")[1].strip()[:60] for error in errors))
        finally:
            engine.dispose()

    def _ledger(self) -> tuple[dict[str, int], set[str]]:
        """Ledger rows by status, and the keys held as unknown outcomes."""
        engine = make_engine(self.database_url)
        try:
            with Session(engine) as session:
                counts = session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
                unknown = select(Delivery.idempotency_key).where(Delivery.status == "unknown")
                return {status: int(n) for status, n in counts}, set(session.scalars(unknown))
        finally:
            engine.dispose()

    def _finished(self, ids: list[str]) -> bool:
        by_status, unknown_keys = self._ledger()
        if by_status.get("pending", 0):
            return False
        received = self.sendgrid.received
        held_not_sent = sum(
            1 for n, m in enumerate(ids, start=1) if not received[m] and f"chaos:{n}" in unknown_keys
        )
        return self._delivered(ids) + held_not_sent == len(ids) and self._queues_empty()

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.deadline
        while not condition():
            if time.monotonic() > deadline:
                raise StalledError(f"not reached within {self.deadline:.0f} s: {what}")
            time.sleep(0.5)

    def _count(self, ids: list[str]) -> None:
        run, received = self.run, self.sendgrid.received
        by_status, unknown_keys = self._ledger()
        keys = {f"chaos:{n}": message_id for n, message_id in enumerate(ids, start=1)}
        unknown_ids = {keys[key] for key in unknown_keys if key in keys}
        run.delivered = self._delivered(ids)
        run.duplicates = sum(count - 1 for message_id in ids if (count := received[message_id]) > 1)
        run.unknown = len(unknown_ids)
        run.unknown_delivered = sum(1 for message_id in unknown_ids if received[message_id])
        run.unknown_not_delivered = run.unknown - run.unknown_delivered
        run.dead_lettered = int(self.rabbitmq.queue(dead_letter_queue("notifications")).get("messages", 0))
        run.pending_left = int(by_status.get("pending", 0))
        run.unknown_causes = self._unknown_causes()
        missing = sum(1 for m in ids if not received[m] and m not in unknown_ids)
        run.lost = max(0, missing - run.dead_lettered)
        last = max((self.sendgrid.first_seen.get(m, 0.0) for m in ids), default=0.0)
        run.seconds_after_last_fault = round(max(0.0, last - self.last_fault_end), 1)
        run.seconds_after_last_kill = round(max(0.0, last - self.last_kill_end), 1)


def report(run: Run) -> None:
    table = Table(title=f"chaos: {run.messages:,} send_email, {run.processes} x {run.threads} workers")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    rows = [
        ("delivered (distinct emails at SendGrid)", f"{run.delivered:,}", f"{run.messages:,}"),
        ("lost", str(run.lost), "0"),
        ("duplicates", str(run.duplicates), "0 (normal priority: never resent)"),
        ("unknown outcomes (held)", str(run.unknown), "counted apart"),
        ("  of which SendGrid had", str(run.unknown_delivered), ""),
        ("  of which SendGrid had not", str(run.unknown_not_delivered), "for an operator"),
        ("dead-lettered", str(run.dead_lettered), "0"),
        ("claims still pending", str(run.pending_left), "0"),
        ("seconds after the last fault", str(run.seconds_after_last_fault), "<= 120"),
        ("seconds after the last worker kill", str(run.seconds_after_last_kill), "<= 120"),
        ("seconds in all", str(run.seconds_total), ""),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if run.stalled:
        console.print(f"[red]stalled[/]: {run.stalled}; worker logs: {', '.join(run.worker_logs)}")
    console.print(
        f"delivered {run.delivered}, lost {run.lost}, duplicates {run.duplicates}, unknown outcomes "
        f"{run.unknown} ({run.unknown_not_delivered} not at SendGrid), dead-lettered {run.dead_lettered}, "
        f"{run.seconds_after_last_fault} s after the last fault "
        f"({run.seconds_after_last_kill} s after the last kill)",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="send_email messages (default 10,000)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for each stage at most")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run = Harness(args.messages, args.processes, args.threads, args.deadline).execute()
    report(run)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(run), indent=2) + "\n")
    return 0 if run.promises_kept else 1


if __name__ == "__main__":
    raise SystemExit(main())
