"""Worker heartbeats from a real ``dramatiq actors --processes 2``, and what happens when one of its
worker processes is killed (SIGKILL, as the OOM killer does)."""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import redis

from store.db import make_engine
from store.migrate import upgrade
from store.types import utcnow
from store.workers import list_workers, queue_samples
from tests.amqp import dramatiq_message, publish
from tests.services import postgres_database, rabbitmq_vhost
from tests.worker import WorkerProcess, wait_until

KEY = b"test-signing-key"


def test_heartbeats_show_a_pool_and_a_killed_child_stops_the_pool_and_is_flagged_stale() -> None:
    key = f"edujobs-test:{uuid.uuid4().hex}"
    with rabbitmq_vhost() as url, postgres_database(migrated=True) as database:
        upgrade(database)
        engine = make_engine(database)
        env = {
            "EDUJOBS_ENVIRONMENT": "test",
            "EDUJOBS_RABBITMQ_URL": url,
            "EDUJOBS_DATABASE_URL": database,
            "EDUJOBS_SIGNING_KEY": KEY.decode(),
            "EDUJOBS_METRICS_PORT": "0",
            "EDUJOBS_TEST_KEY": key,
            "EDUJOBS_HEARTBEAT_SECONDS": "0.5",
            "EDUJOBS_WORKER_POOL": "everything",
        }
        # Given a pool of two worker processes under one dramatiq master
        pool = WorkerProcess(env, processes=2, threads=2, module="tests.e2e.actors_testing").wait_ready()
        try:

            def beating() -> list[dict[str, Any]]:
                views = list_workers(engine, stale_beats=3)
                return [v.as_dict() for v in views if v.row.parent_pid == pool.process.pid]

            # When they run, both beat, with their pool, queues and threads
            wait_until(lambda: len(beating()) == 2, timeout=30, what="two heartbeats")
            workers = beating()
            assert {w["status"] for w in workers} == {"alive"}
            assert all(w["pool"] == "everything" and w["threads"] == 2 for w in workers)
            assert all("maintenance" in w["queues"] and "media" in w["queues"] for w in workers)
            # And the jobs they run are counted
            for n in range(4):
                publish(
                    url,
                    "maintenance",
                    dramatiq_message("testing.record", "maintenance", {"value": f"j{n}"}, key=KEY),
                )
            wait_until(lambda: redis.Redis().llen(key) == 4, timeout=30, what="four jobs run")
            wait_until(
                lambda: sum(int(w["processed"]) for w in beating()) == 4,
                timeout=30,
                what="the beats to count four processed jobs",
            )
            # And their queues' depths are sampled for the backlog trend
            sampled = {s.queue for s in queue_samples(engine, utcnow().replace(second=0, microsecond=0))}
            assert {"maintenance", "media", "notifications"} <= sampled

            # When one worker process is killed with SIGKILL
            victim, survivor = sorted(beating(), key=lambda w: int(w["pid"]))
            os.kill(int(victim["pid"]), signal.SIGKILL)
            # Then the dramatiq master stops the other one and exits with 1 (it does not carry on,
            # and it does not replace the child: a supervisor must restart it)
            wait_until(
                lambda: pool.process.poll() is not None, timeout=60, what="the dramatiq master to exit"
            )
            assert pool.process.returncode == 1
            assert "exited unexpectedly" in pool.output()
            # And the heartbeats tell which: the killed one goes stale, the other stopped cleanly
            wait_until(
                lambda: (
                    {w["id"]: w["status"] for w in beating()}
                    == {victim["id"]: "stale", survivor["id"]: "stopped"}
                ),
                timeout=30,
                what="the killed worker flagged stale and the other stopped",
            )
        finally:
            pool.stop()
            redis.Redis().delete(key)
            engine.dispose()
