"""The fault harness's own RabbitMQ node and Redis server, which it may bounce and stop at will.

The machine's RabbitMQ (5672) and Redis (6379) serve everyone's tests: the harness never touches
them. It starts a second RabbitMQ node (its own node name, AMQP, management and distribution ports,
data and log folders owned by the ``rabbitmq`` user, its own config and enabled-plugins files: the
system's ``rabbitmq.conf`` pins 5672) and a redis-server on a free port, and removes both after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class PrivateRabbitMQ:
    """A RabbitMQ node of the harness's own: ``start``, ``bounce`` (stop_app/start_app), ``stop``."""

    def __init__(self) -> None:
        self.node = f"edujobs-chaos-{os.getpid()}@localhost"
        self.amqp_port, self.management_port, self.dist_port = free_port(), free_port(), free_port()
        self.base = Path(tempfile.mkdtemp(prefix="edujobs-chaos-rabbitmq-"))

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def config(self) -> str:
        """The node's rabbitmq.conf (its own ports: the system's pins 5672)."""
        return (
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
        )

    def plugins(self) -> str:
        return "[rabbitmq_management].\n"

    def start(self) -> PrivateRabbitMQ:
        (self.base / "mnesia").mkdir()
        (self.base / "log").mkdir()
        (self.base / "rabbitmq.conf").write_text(self.config())
        (self.base / "enabled_plugins").write_text(self.plugins())
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for path in self.base.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self.launch()
        logger.info(
            "RabbitMQ node %s on %d (management %d).", self.node, self.amqp_port, self.management_port
        )
        return self

    def launch(self) -> None:
        """Start the node from its folder (again after ``stop(keep=True)``), and wait for it."""
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=env, cwd=self.base, check=True, capture_output=True
        )
        self._await_startup()
        _wait_port(self.management_port, 60)

    def bounce(self) -> None:
        """``rabbitmqctl stop_app`` then ``start_app``: every connection drops, the node comes back."""
        self._ctl("stop_app")
        self._ctl("start_app")
        self._await_startup()

    def close_connections(self, wait: float = 15) -> int:
        """Close every client connection through the management API (as an operator, or a network
        partition, would); return how many were closed. The API lists connections a few seconds
        after they open: wait up to ``wait`` for some to show."""
        with self._management() as http:
            deadline = time.monotonic() + wait
            while not (connections := http.get("/api/connections").json()) and time.monotonic() < deadline:
                time.sleep(0.5)
            for connection in connections:
                http.delete(f"/api/connections/{connection['name']}",
                            headers={"X-Reason": "edujobs chaos: connection closed"})  # fmt: skip
        return len(connections)

    def _management(self) -> httpx.Client:
        base = f"http://127.0.0.1:{self.management_port}"
        return httpx.Client(base_url=base, auth=("guest", "guest"), timeout=10)

    def queue(self, name: str) -> dict[str, Any]:
        """The management API's figures of queue ``name`` (``{"messages": 0}`` if it does not exist)."""
        with self._management() as http:
            response = http.get(f"/api/queues/%2F/{name}")
            if response.status_code == 404:
                return {"messages": 0}
            response.raise_for_status()
            return dict(response.json())

    def stop(self, *, keep: bool = False) -> None:
        """Stop the node; remove its folder unless ``keep`` (to ``launch`` it again)."""
        with contextlib.suppress(Exception):
            self._ctl("stop")
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def _await_startup(self, timeout: float = 120) -> None:
        # Until the node has registered with epmd, rabbitmqctl cannot even reach it to wait.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ctl("await_startup", "--timeout", "30")
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def ctl(self, *args: str) -> None:
        """``rabbitmqctl -n NODE ARGS``."""
        self._ctl(*args)

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, *args], check=True, capture_output=True, timeout=180)


class PrivateRedis:
    """A redis-server of the harness's own, in the foreground of a subprocess it can stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 30)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None
