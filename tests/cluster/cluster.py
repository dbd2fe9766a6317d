"""A 3-node RabbitMQ cluster on this machine, started with ``deploy/rabbitmq``'s files.

Three extra nodes (their own node names, AMQP / management / Prometheus / distribution ports, data and
log folders owned by the ``rabbitmq`` user, config and enabled-plugins files), joined with
``rabbitmqctl join_cluster``; the machine's node on 5672 is never touched. Each node's rabbitmq.conf is
deploy/rabbitmq/rabbitmq.conf with its own ports, and loads deploy/rabbitmq/definitions.json (the
edujobs vhost, users and policies): the cluster test uses the users and vhost those files define.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from bench.chaos_services import PrivateRabbitMQ, free_port

RABBITMQ = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq"
VHOST = "edujobs"
#: The passwords of the committed definitions (deploy/.env.example).
WORKER = ("edujobs", "edujobs-change-me")
ADMIN = ("admin", "admin-change-me")
MONITORING = ("monitoring", "monitoring-change-me")


class ClusterNode(PrivateRabbitMQ):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.node = f"{name}@localhost"
        self.prometheus_port = free_port()

    def config(self) -> str:
        text = (RABBITMQ / "rabbitmq.conf").read_text()
        text = re.sub(
            r"(?m)^listeners\.tcp\.default = .*$", f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}", text
        )
        text = re.sub(
            r"(?m)^management\.tcp\.port = .*$", f"management.tcp.port = {self.management_port}", text
        )
        text = re.sub(
            r"(?m)^load_definitions = .*$", f"load_definitions = {self.base / 'definitions.json'}", text
        )
        assert str(self.amqp_port) in text and str(self.base) in text, (
            "deploy/rabbitmq/rabbitmq.conf changed shape"
        )
        return (
            text
            + "management.tcp.ip = 127.0.0.1\n"
            + f"prometheus.tcp.port = {self.prometheus_port}\n"
            + "prometheus.tcp.ip = 127.0.0.1\n"
            # the test's disk may have less free space than a production node should keep
            + "disk_free_limit.absolute = 50MB\n"
        )

    def plugins(self) -> str:
        shutil.copy(RABBITMQ / "definitions.json", self.base / "definitions.json")
        return (RABBITMQ / "enabled_plugins").read_text()

    def amqp(self, user: tuple[str, str] = WORKER) -> str:
        return f"amqp://{user[0]}:{user[1]}@127.0.0.1:{self.amqp_port}/{VHOST}"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.management_port}", auth=ADMIN, timeout=10)


class Cluster:
    def __init__(self, size: int = 3) -> None:
        tag = f"edujobs-cluster-{os.getpid()}"
        self.nodes = [ClusterNode(f"{tag}-{n}") for n in range(1, size + 1)]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
            node._await_startup()
        deadline = time.monotonic() + 60
        while len(self.running()) < len(self.nodes):
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster has {self.running()} running")
            time.sleep(1)
        return self

    def running(self, via: ClusterNode | None = None) -> list[str]:
        node = via or next(n for n in self.nodes if _alive(n))
        with node.http() as http:
            return [n["name"] for n in http.get("/api/nodes").json() if n.get("running")]

    def url(self) -> str:
        """Every node's AMQP URL, ``;``-separated (pika tries them in order)."""
        return ";".join(node.amqp() for node in self.nodes)

    def management_url(self, via: ClusterNode) -> str:
        return f"http://{MONITORING[0]}:{MONITORING[1]}@127.0.0.1:{via.management_port}"

    def queue(self, name: str, via: ClusterNode) -> dict[str, Any]:
        with via.http() as http:
            response = http.get(f"/api/queues/{VHOST}/{urllib.parse.quote(name, safe='')}")
            response.raise_for_status()
            return dict(response.json())

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def _alive(node: ClusterNode) -> bool:
    try:
        with node.http() as http:
            return http.get("/api/overview").status_code == 200
    except httpx.HTTPError:
        return False
