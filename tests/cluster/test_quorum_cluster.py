"""Growing past one machine: workers on quorum queues of a 3-node RabbitMQ cluster lose nothing when the
node they are connected to, which leads the queue, stops mid-drain; nothing is dead-lettered.

``make test-cluster`` (marker ``cluster``; not in ``make test``); ``.ci/run`` runs it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from brokers.client import Client
from brokers.settings import Settings
from brokers.stack import build_broker
from brokers.topology import DOMAIN_QUEUES
from contracts import registry
from contracts.registry import ActorContract, Contract
from store.migrate import upgrade
from tests.cluster.cluster import MONITORING, VHOST, Cluster
from tests.services import postgres_database, require
from tests.worker import WorkerProcess

pytestmark = pytest.mark.cluster

MESSAGES = 3000


class RecordArgs(Contract):
    value: str
    sleep: float = 0.0


@pytest.fixture
def record_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    registry.all_contracts()
    contract = ActorContract("testing.record", "maintenance", "normal", RecordArgs)
    monkeypatch.setitem(registry._CONTRACTS, "testing.record", contract)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.fail("the cluster test needs rabbitmq-server (Debian package rabbitmq-server)")
    started = Cluster(3)
    try:
        yield started.start()
    finally:
        started.stop()


def wait_until(condition: object, what: str, timeout: float, log: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.5)
    tail = log.output()[-4000:] if log else ""
    raise AssertionError(f"{what}: not within {timeout}s\n{tail}")


def test_a_node_stopped_mid_drain_loses_nothing_and_dead_letters_nothing(
    cluster: Cluster, record_contract: None
) -> None:
    require("Redis", "127.0.0.1", 6379)
    first, second, _third = cluster.nodes
    key = f"edujobs-test:{uuid.uuid4().hex}"
    store = redis.Redis()
    with postgres_database() as database:
        upgrade(database)
        env = {
            "EDUJOBS_ENVIRONMENT": "test",
            "EDUJOBS_RABBITMQ_URL": cluster.url(),
            "EDUJOBS_RABBITMQ_MANAGEMENT_URL": cluster.management_url(second),
            "EDUJOBS_QUEUE_TYPE": "quorum",
            "EDUJOBS_DATABASE_URL": database,
            "EDUJOBS_SIGNING_KEY": "test-signing-key",
            "EDUJOBS_METRICS_PORT": "0",
            "EDUJOBS_TEST_KEY": key,
        }
        # Given the topology as quorum queues, declared through the first node (which leads them)
        broker = build_broker(Settings(rabbitmq_url=cluster.url(), queue_type="quorum"))
        broker.declare_topology(DOMAIN_QUEUES)
        broker.close()
        maintenance = cluster.queue("maintenance", second)
        assert maintenance["type"] == "quorum"
        assert len(maintenance["members"]) == 3, maintenance["members"]
        assert maintenance["leader"] == first.node
        # the definitions' policy applies to the dead-letter queues, and their monitoring user (the one
        # EDUJOBS_RABBITMQ_MANAGEMENT_URL and KEDA use) reads the queue figures
        wait_until(lambda: cluster.queue("maintenance.XQ", second).get("policy") == "dead-letters-cqv2",
                   "the definitions' policy on .XQ", 30)  # fmt: skip
        listing = httpx.get(f"http://127.0.0.1:{second.management_port}/api/queues/{VHOST}", auth=MONITORING)
        assert listing.status_code == 200 and "maintenance" in {q["name"] for q in listing.json()}
        # and 3,000 messages (20 ms of work each) published with confirms
        client = Client(cluster.url(), signing_key=b"test-signing-key")
        values = [f"m{n}" for n in range(MESSAGES)]
        try:
            client.send_many("testing.record", [{"value": v, "sleep": 0.02} for v in values])
        finally:
            client.close()
        # When workers drain them, connected to the first node, and that node stops mid-drain
        worker = WorkerProcess(
            env, processes=1, threads=4, queues=("maintenance",), module="tests.e2e.actors_testing"
        )
        try:
            worker.wait_ready(120)
            wait_until(lambda: store.llen(key) >= MESSAGES // 5, "a fifth drained", 180, worker)
            first.stop(keep=True)
            # (4 threads x 20 ms per message: the drain takes 15 s or more, a node's stop a few)
            drained_when_stopped = len(set(store.lrange(key, 0, -1)))
            assert drained_when_stopped < MESSAGES, "the drain ended before the node stopped: raise MESSAGES"
            # Then the rest is processed through the other nodes (a new leader was elected)
            wait_until(
                lambda: len(set(store.lrange(key, 0, -1))) == MESSAGES, "every message processed", 300, worker
            )
        finally:
            worker.stop()
        runs = [v.decode() for v in store.lrange(key, 0, -1)]
        recorded = set(runs)
        store.delete(key)
        print(f"cluster: {drained_when_stopped} of {MESSAGES} processed when the node stopped, "
              f"{len(recorded)} in the end, {len(runs) - len(recorded)} run twice (redelivered)")  # fmt: skip
        assert recorded == set(values)  # nothing lost (a redelivery may record a value twice)
        assert cluster.queue("maintenance", second)["leader"] != first.node
        # And, with the first node back, no message waits anywhere and none was dead-lettered
        first.launch()
        wait_until(lambda: len(cluster.running(second)) == 3, "the node rejoined", 120)
        for name in ("maintenance", "maintenance.DQ", "maintenance.XQ", "maintenance.park"):
            wait_until(lambda n=name: cluster.queue(n, second).get("messages") == 0, f"{name} empty", 60)
