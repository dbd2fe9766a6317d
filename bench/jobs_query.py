"""``python -m bench.jobs_query [--rows N] [--requests N]``: ``GET /v1/jobs?user_id=`` on a
million-row job table in PostgreSQL, through the HTTP API, side by side with the same query
without HTTP and with the query on the table without its index.

A database of its own is migrated and filled in PostgreSQL itself (``generate_series``): ``--rows``
jobs (default 1,000,000) of 20,000 users (50 each), five enqueuing services, every state, spread
over 30 days. Then, with an ops token, random users' first pages (20 jobs) and second pages
(through ``next_cursor``) are fetched over one keep-alive HTTP connection from the API served by
uvicorn in this process; the latencies are measured from request to parsed response. Contenders:

- ``api``: ``GET /v1/jobs?user_id=U`` (and the next page) through the API;
- ``store``: ``store.job_search.search_jobs`` for the same users, without HTTP, for reference;
- ``no_index``: the store's query after dropping ``ix_job_records_user_created`` (what the
  listing costs without it; fewer requests, each scans the table).

The plan PostgreSQL chose (``EXPLAIN (ANALYZE, BUFFERS)``) is printed and kept in the JSON
(``var/bench/jobs_query.json``). Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql

from bench.report import machine, start_run, write_json
from brokers.client import Client
from ops.api import create_app
from store import tokens
from store.db import make_engine
from store.job_search import JobFilter, search_jobs
from store.migrate import upgrade
from store.models import JobRecord
from tests.services import postgres_database

OUTPUT = Path("var/bench/jobs_query.json")
USERS = 20_000
PAGE = 20  # a user has 50 jobs (at 1,000,000 rows): three pages

FILL = """
INSERT INTO job_records (message_id, actor_name, queue, user_id, state, progress, attempts, error,
    enqueued_at, started_at, finished_at, updated_at, created_at, enqueued_by)
SELECT md5(i::text) || lpad(i::text, 8, '0'),
       (ARRAY['notifications.send_email', 'notifications.send_sms', 'media.transcode_video',
              'reports.generate_report', 'academics.calculate_grades'])[1 + i % 5],
       (ARRAY['notifications', 'notifications', 'media', 'reports', 'academics'])[1 + i % 5],
       ((i::bigint * 7919) % :users)::integer,
       (ARRAY['succeeded', 'succeeded', 'succeeded', 'failed', 'dead', 'enqueued', 'running'])[1 + i % 7],
       100, 1, NULL,
       t, t + interval '1 second', t + interval '3 seconds', t + interval '3 seconds', t,
       'token:service-' || (i % 5)
FROM (SELECT i, now() - (i * interval '2.592 seconds') AS t FROM generate_series(1, :rows) AS i) AS s
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(calls: int, call: Callable[[int], None]) -> list[float]:
    users = random.Random(7)
    latencies = []
    for _ in range(calls):
        user = users.randrange(USERS)
        started = time.perf_counter()
        call(user)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def explain(engine: Engine, user_id: int) -> str:
    """The plan of ``search_jobs``'s first page for ``user_id`` (its statement, values inlined)."""
    statement = (
        select(JobRecord)
        .where(JobRecord.user_id == user_id)
        .order_by(JobRecord.created_at.desc(), JobRecord.message_id.desc())
        .limit(PAGE + 1)
    )
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
    with engine.connect() as connection:
        rows = connection.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).scalars().all()
    return "\n".join(rows)


def serve(engine: Engine, amqp_url: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    app = create_app(
        rabbitmq_url=amqp_url, engine=engine, client=Client(amqp_url, signing_key=b"bench"), rate_limit=0
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start within 30 s")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs_query", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args(argv)
    console = start_run()
    results: dict[str, Any] = {"rows": args.rows, "machine": machine()}
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text(FILL), {"rows": args.rows, "users": USERS})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE job_records"))
        results["fill_seconds"] = round(time.perf_counter() - started, 1)
        console.print(f"{args.rows:,} job rows written and analysed in {results['fill_seconds']} s")
        token = tokens.create(engine, name="bench-ops", scopes=["ops:read"], created_by="bench")
        server, thread, base = serve(engine, "amqp://guest:guest@127.0.0.1:5672/%2F")
        try:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as http:
                cursors: dict[int, str] = {}

                def first_page(user: int) -> None:
                    response = http.get("/v1/jobs", params={"user_id": user, "limit": PAGE})
                    response.raise_for_status()
                    cursors[user] = response.json()["next_cursor"]

                def next_page(user: int) -> None:
                    if cursors[user]:  # users with one page only have no next page (small --rows)
                        params: dict[str, str | int] = {
                            "user_id": user,
                            "limit": PAGE,
                            "cursor": cursors[user],
                        }
                        http.get("/v1/jobs", params=params).raise_for_status()

                def direct(user: int) -> None:
                    search_jobs(engine, JobFilter(user_id=user), limit=PAGE)

                timed(50, first_page)  # warm the connection pools and the index pages
                api = timed(args.requests, first_page)
                api_next = timed(args.requests, next_page)  # the same users, in the same order
                store = timed(args.requests, direct)
        finally:
            server.should_exit = True
            thread.join(10)
        results["api_first_page"] = summary(api)
        results["api_next_page"] = summary(api_next)
        results["store_first_page"] = summary(store)
        results["plan"] = explain(engine, 4242)
        console.print("EXPLAIN ANALYZE of the first page of a user's jobs:\n" + results["plan"])
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_job_records_user_created"))
        no_index = timed(max(5, args.requests // 100), direct)
        results["no_index_first_page"] = summary(no_index)
        results["plan_without_index"] = explain(engine, 4242)
        engine.dispose()
    ratio = results["no_index_first_page"]["p50_ms"] / max(results["store_first_page"]["p50_ms"], 1e-6)
    results["no_index_over_indexed_p50"] = round(ratio, 1)
    api, after, alone, bare = (
        results[k] for k in ("api_first_page", "api_next_page", "store_first_page", "no_index_first_page")
    )
    console.print(
        f"GET /v1/jobs?user_id= on {args.rows:,} rows, {args.requests} requests: first page p50 "
        f"{api['p50_ms']} ms, p99 {api['p99_ms']} ms; next page (cursor) p50 {after['p50_ms']} ms, "
        f"p99 {after['p99_ms']} ms; the store's query alone p50 {alone['p50_ms']} ms, p99 "
        f"{alone['p99_ms']} ms; without the index p50 {bare['p50_ms']} ms ({ratio:.0f}x the indexed query)"
    )
    write_json(OUTPUT, results)
    console.print(f"figures written to {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
