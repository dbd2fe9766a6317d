"""Notification benchmarks: ``python -m bench.notifications [--quick] [--rounds N]``.

1. **bulk**: ``notifications.send_bulk_email``'s service to 10,000 users (SQLite, local fake
   SendGrid answering at once, rate limit lifted): requests made and seconds taken.
2. **throughput**: ``notifications.send_email`` messages drained by ``dramatiq actors --processes 1
   --threads 8`` against a fake SendGrid answering after 50 ms (users in PostgreSQL, the ledger, the
   circuit breaker, templates, job state: the whole path), against the same number of
   ``SendGridAPIClient.send`` calls made directly from 8 threads. Both are timed at the fake server,
   from its first request to its last. Target: worker / direct >= 0.85.

Figures are written to ``var/bench/notifications.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sendgrid import SendGridAPIClient
from sqlalchemy import insert
from sqlalchemy.orm import Session

from actors.notifications import bulk, service
from bench.harness import Contender, Measurement, RatioSpec, run_side_by_side, summarise
from bench.report import comparison_table, start_run
from brokers.client import Client
from brokers.settings import Settings
from store.db import make_engine
from store.ledger import Ledger
from store.migrate import upgrade
from store.models import User
from tests.fakes.http import FakeServer, Recorded, Reply
from tests.services import postgres_database, rabbitmq_vhost
from tests.worker import WorkerProcess

logger = logging.getLogger("bench.notifications")

THREADS = 8
LATENCY = 0.05
TARGET = 0.85
OUTPUT = Path("var/bench/notifications.json")


class TimedSendGrid(FakeServer):
    """A fake SendGrid that answers 202 after ``latency`` and notes when each request arrived."""

    def __init__(self, latency: float) -> None:
        self.arrivals: list[float] = []
        self._arrivals_lock = threading.Lock()

        def reply(request: Recorded) -> Reply:
            with self._arrivals_lock:
                self.arrivals.append(time.perf_counter())
            return Reply(202, None, {"X-Message-Id": "bench"}, delay=latency)

        super().__init__(reply)

    def wait_for_arrivals(self, count: int, timeout: float = 300) -> Measurement:
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.arrivals)}/{count} requests arrived in {timeout} s")
            time.sleep(0.01)
        time.sleep(LATENCY * 2)  # the last answers go out
        first, last = self.arrivals[0], self.arrivals[count - 1]
        return Measurement(count=count - 1, seconds=last - first)


def _users(engine: Any, count: int) -> None:
    rows = [
        {"id": n, "name": f"Student {n}", "role": "student", "email": f"s{n}@example.edu"}
        for n in range(1, count + 1)
    ]
    with Session(engine) as session:
        session.execute(insert(User), rows)
        session.commit()


def bench_bulk(recipients: int) -> dict[str, float]:
    fake = TimedSendGrid(latency=0).start()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        _users(engine, recipients)
        settings = Settings(
            sendgrid_api_key="SG.bench", sendgrid_host=fake.url, sendgrid_timeout=10,
            email_from="school@example.edu",
        )  # fmt: skip
        notifier = service.Notifier(engine=engine, ledger=Ledger(engine), settings=settings)
        started = time.perf_counter()
        result = bulk.send_bulk_email(
            notifier, bulk.TokenBucket(rate=1000, burst=100), user_ids=list(range(1, recipients + 1)),
            template="welcome", context={}, idempotency_key="bench", message_id="bench",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        engine.dispose()
    fake.stop()
    return {"recipients": result.recipients, "requests": len(fake.requests), "seconds": round(seconds, 3)}


def _email_body(n: int) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": f"s{n}@example.edu"}]}],
        "from": {"email": "school@example.edu"},
        "subject": "Welcome",
        "content": [{"type": "text/plain", "value": "Hello"}, {"type": "text/html", "value": "<p>Hello</p>"}],
    }


def measure_direct(messages: int) -> Measurement:
    fake = TimedSendGrid(LATENCY).start()
    client = SendGridAPIClient(api_key="SG.bench", host=fake.url)
    per_thread = messages // THREADS

    def work(offset: int) -> None:
        for n in range(per_thread):
            client.send(_email_body(offset + n))

    threads = [threading.Thread(target=work, args=(i * per_thread,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        return fake.wait_for_arrivals(per_thread * THREADS)
    finally:
        fake.stop()


def measure_worker(messages: int) -> Measurement:
    fake = TimedSendGrid(LATENCY).start()
    with rabbitmq_vhost() as amqp_url, postgres_database() as db_url:
        upgrade(db_url)
        engine = make_engine(db_url)
        _users(engine, messages)
        engine.dispose()
        env = {
            "EDUJOBS_RABBITMQ_URL": amqp_url,
            "EDUJOBS_DATABASE_URL": db_url,
            "EDUJOBS_SENDGRID_HOST": fake.url,
            "EDUJOBS_SENDGRID_API_KEY": "SG.bench",
            "EDUJOBS_SIGNING_KEY": "bench-key",
            "EDUJOBS_METRICS_PORT": "0",
        }
        # The worker declares the queues; the messages are published in one confirmed burst.
        worker = WorkerProcess(env, threads=THREADS).wait_ready()
        try:
            client = Client(amqp_url, signing_key=b"bench-key")
            try:
                payloads = [{"user_id": n, "template": "welcome"} for n in range(1, messages + 1)]
                client.send_many("notifications.send_email", payloads)
            finally:
                client.close()
            return fake.wait_for_arrivals(messages)
        finally:
            worker.stop()
            worker.log.unlink(missing_ok=True)
            fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller N and one round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    console = start_run()
    rounds = args.rounds or (1 if args.quick else 3)
    recipients = 2_000 if args.quick else 10_000
    bulk_figures = bench_bulk(recipients)
    logger.info("bulk: %s", bulk_figures)
    messages = 80 if args.quick else 400
    contenders = [
        Contender(
            "worker", f"send_email through a worker, {THREADS} threads", lambda: measure_worker(messages)
        ),
        Contender(
            "direct", f"SendGridAPIClient.send from {THREADS} threads", lambda: measure_direct(messages)
        ),
    ]
    result = summarise(
        name="notifications_throughput",
        title=f"Emails to a provider with {LATENCY * 1000:.0f} ms latency",
        contenders=contenders,
        measurements=run_side_by_side(contenders, rounds),
        ratios=[RatioSpec("worker / direct SDK calls", "worker", "direct", TARGET)],
        notes=[f"{messages} emails per run, timed at the fake server from its first to its last request"],
    )
    console.print(f"Bulk email: {bulk_figures['recipients']:,} recipients in {bulk_figures['requests']} "
                  f"requests, {bulk_figures['seconds']} s")  # fmt: skip
    console.print(comparison_table(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    ratio = result.ratios[0]
    args.output.write_text(json.dumps({"bulk": bulk_figures, "throughput": {
        "per_round": ratio.per_round, "median": ratio.median, "target": TARGET,
        "rates": {c.name: c.rates for c in result.contenders}}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
