"""Event benchmark: ``python -m bench.events [--count N] [--quick] [--rounds N]``.

N ``attendance.marked`` events, published to ``edujobs.events`` and routed to one handler's queue
(``bench.on_attendance_marked``, one Redis INCR per event), against N plain messages with the same
fields to one actor (``bench.mark_attendance``, one INCR) on the ``bench`` queue. Each run gets its
own RabbitMQ vhost, SQLite database (job state is recorded, as a worker does by default) and Redis
key; the queue is pre-filled with N signed messages through a raw pika confirm window (events built
by ``brokers.client.build_event``, messages by ``build_message``), then drained by ``dramatiq
bench.events_actors --processes 1 --threads 8`` consuming only that queue; the rate runs from the
first to the last INCR. Target: events / messages >= 0.8.

``--work db``: both sides do the real ``academics.on_attendance_marked`` work instead
(``actors.academics.service.apply_attendance_mark``: the processed-event record, the roll-up upsert
over 50 courses and the student's intervention check, one PostgreSQL transaction each, on a
migrated database of the run's own), the handler ``bench.on_attendance_marked_db`` against the plain
actor ``bench.apply_attendance_mark``. Figures go to ``var/bench/events.json`` (``events-db.json``
with ``--work db``); nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from sqlalchemy import insert

from bench.amqp import ConfirmWindowPublisher, Outgoing
from bench.harness import (
    Contender,
    Measurement,
    RatioSpec,
    measure_drain,
    redis_counter,
    run_side_by_side,
    summarise,
)
from bench.noop import QUEUE
from bench.report import comparison_table, start_run
from brokers.client import build_event, build_message
from brokers.settings import ENV_PREFIX, Settings
from brokers.stack import build_broker
from contracts.events import EVENTS_EXCHANGE, AttendanceMarked, register_handler
from contracts.registry import ActorContract
from store.db import make_engine
from store.migrate import upgrade
from store.models import Course
from tests.services import postgres_database, rabbitmq_vhost

HANDLER = "bench.on_attendance_marked"
ACTOR = "bench.mark_attendance"
DB_HANDLER = "bench.on_attendance_marked_db"
DB_ACTOR = "bench.apply_attendance_mark"
COURSES = 50
EVENT = "attendance.marked"
THREADS = 8
TARGET = 0.8
OUTPUT = Path("var/bench/events.json")

#: The plain actors' contracts (the event's fields), built here rather than registered.
MARK_CONTRACT = ActorContract(actor_name=ACTOR, queue=QUEUE, priority="normal", model=AttendanceMarked)
DB_CONTRACT = ActorContract(actor_name=DB_ACTOR, queue=QUEUE, priority="normal", model=AttendanceMarked)


def _payload(n: int) -> dict[str, object]:
    return {
        "user_id": n,
        "course_id": 1 + n % COURSES,
        "day": date(2026, 12, 4).isoformat(),
        "status": "present",
    }


@contextlib.contextmanager
def _database(work: str) -> Iterator[str]:
    """The run's database: SQLite for the INCR work (job state only), else a migrated PostgreSQL
    database with the courses the roll-ups refer to."""
    if work == "db":
        with postgres_database(migrated=True) as url:
            engine = make_engine(url)
            with engine.begin() as connection:
                connection.execute(insert(Course), [
                    {"id": n, "code": f"B{n}", "title": f"Course {n}", "starts_on": date(2026, 9, 1),
                     "ends_on": date(2027, 6, 30)} for n in range(1, COURSES + 1)])  # fmt: skip
            engine.dispose()
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        yield url


def _drain(count: int, *, exchange: str, queue: str, build: Iterator[Outgoing], work: str) -> Measurement:
    with rabbitmq_vhost() as url, redis_counter() as counter, _database(work) as database_url:
        broker = build_broker(Settings(rabbitmq_url=url, database_url=database_url))
        try:
            broker.declare_topology((queue,))
        finally:
            broker.close()
        with ConfirmWindowPublisher(url, exchange=exchange) as publisher:
            publisher.publish_all(build)
        return measure_drain(
            module="bench.events_actors",
            env={f"{ENV_PREFIX}RABBITMQ_URL": url, f"{ENV_PREFIX}DATABASE_URL": database_url},
            counter=counter,
            expected=count,
            threads=THREADS,
            queues=(queue,),
        )


def measure_events(count: int, work: str = "incr") -> Measurement:
    key = Settings().keyring()

    def events() -> Iterator[Outgoing]:
        for n in range(count):
            _id, body = build_event(EVENT, _payload(n), signing_key=key)
            yield EVENT, body, 0

    queue = DB_HANDLER if work == "db" else HANDLER
    return _drain(count, exchange=EVENTS_EXCHANGE, queue=queue, build=events(), work=work)


def measure_messages(count: int, work: str = "incr") -> Measurement:
    key = Settings().keyring()
    contract = DB_CONTRACT if work == "db" else MARK_CONTRACT

    def messages() -> Iterator[Outgoing]:
        for n in range(count):
            _id, routing_key, body, priority = build_message(contract, _payload(n), signing_key=key)
            yield routing_key, body, priority

    return _drain(count, exchange="", queue=QUEUE, build=messages(), work=work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=None, help="events (and messages) per run (100,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 per run and one round: a smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument(
        "--work",
        choices=("incr", "db"),
        default="incr",
        help="incr: one Redis INCR each (the event path's own cost); db: the real attendance.marked "
        "handler's work on PostgreSQL on both sides",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output = args.output or (OUTPUT.with_name("events-db.json") if args.work == "db" else OUTPUT)
    count = args.count or (2_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if count < 100 or rounds < 1:
        parser.error("--count must be at least 100 and --rounds at least 1")
    # The handler's bindings, as the worker's decorator records them: declared with its queue.
    handler_name, actor_name = (DB_HANDLER, DB_ACTOR) if args.work == "db" else (HANDLER, ACTOR)
    register_handler(handler_name, (EVENT,))
    console = start_run()
    work = args.work
    contenders = [
        Contender("events", f"{EVENT} events through {handler_name}", lambda: measure_events(count, work)),
        Contender("messages", f"plain messages to {actor_name}", lambda: measure_messages(count, work)),
    ]
    result = summarise(
        name="events_throughput",
        title="Events through a handler versus plain messages to one actor",
        contenders=contenders,
        measurements=run_side_by_side(contenders, rounds),
        ratios=[RatioSpec("events / messages", "events", "messages", TARGET)],
        notes=[
            f"{count} pre-filled signed messages per run, dramatiq --processes 1 --threads {THREADS} "
            "on that one queue; the handler also builds the Event (payload validated); work: "
            + (
                "apply_attendance_mark on PostgreSQL (processed-event record, roll-up upsert over "
                f"{COURSES} courses, intervention check) then one Redis INCR"
                if work == "db"
                else "one Redis INCR"
            )
        ],
    )
    console.print(comparison_table(result))
    output.parent.mkdir(parents=True, exist_ok=True)
    ratio = result.ratios[0]
    output.write_text(json.dumps({"count": count, "work": work, "throughput": {
        "per_round": ratio.per_round, "median": ratio.median, "target": TARGET,
        "rates": {c.name: c.rates for c in result.contenders}}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
