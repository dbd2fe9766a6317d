"""RabbitMQ policies for tests that need a queue to misbehave the way a real one can."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.services import AUTH, MANAGEMENT_URL


@contextmanager
def refusing(amqp_url: str, queue: str) -> Iterator[None]:
    """A policy that makes ``queue`` nack every publish, for the duration of a ``with`` block."""
    vhost = urllib.parse.quote(urllib.parse.unquote(amqp_url.rsplit("/", 1)[1]), safe="")
    policy = f"/api/policies/{vhost}/refuse"
    definition = {"max-length": 0, "overflow": "reject-publish"}
    pattern = "^" + queue.replace(".", r"\.") + "$"
    with httpx.Client(base_url=MANAGEMENT_URL, auth=AUTH, timeout=10) as http:

        def wait_for_policy(name: str | None) -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                response = http.get(f"/api/queues/{vhost}/{urllib.parse.quote(queue)}")
                if response.status_code == 200 and response.json().get("policy") == name:
                    return
                time.sleep(0.1)
            raise AssertionError(f"the policy on {queue} did not become {name!r}")

        body = {"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10}
        http.put(policy, json=body).raise_for_status()
        wait_for_policy("refuse")
        try:
            yield
        finally:
            http.delete(policy).raise_for_status()
            wait_for_policy(None)
