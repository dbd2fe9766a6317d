"""Test helpers that talk AMQP directly, as another service or an operator would."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pika

from contracts.signing import sign_message


@dataclass
class Received:
    body: bytes
    headers: dict[str, Any]
    priority: int | None

    def message(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def dramatiq_message(
    actor_name: str,
    queue: str,
    kwargs: dict[str, Any],
    *,
    key: bytes | None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message in Dramatiq's format, signed with ``key`` unless it is None (``options`` must then
    be ones edujobs reads: add others to the result to forge a message)."""
    message: dict[str, Any] = {
        "queue_name": queue,
        "actor_name": actor_name,
        "args": [],
        "kwargs": kwargs,
        "options": dict(options or {}),
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    if key is not None:
        sign_message(key, message)
    return message


def publish(
    url: str, queue: str, body: bytes | dict[str, Any], *, priority: int | None = None, exchange: str = ""
) -> None:
    """Publish ``body`` with a confirm; ``queue`` is the routing key (on ``exchange``)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange, queue, data, pika.BasicProperties(delivery_mode=2, priority=priority), mandatory=True
        )
    finally:
        connection.close()


def take(url: str, queue: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Take (get and ack) ``count`` messages from ``queue``, waiting up to ``timeout`` for them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    taken: list[Received] = []
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while len(taken) < count:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{queue}: expected {count} messages, got {len(taken)} in {timeout}s"
                    )
                connection.sleep(0.1)
                continue
            taken.append(Received(body, dict(properties.headers or {}), properties.priority))
    finally:
        connection.close()
    return taken


def depth(url: str, queue: str) -> int:
    return _counts(url, queue)[0]


def consumers(url: str, queue: str) -> int:
    """How many consumers ``queue`` has (a paused worker closes its consumer)."""
    return _counts(url, queue)[1]


def _counts(url: str, queue: str) -> tuple[int, int]:
    """``queue``'s ready messages and consumers."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(queue, passive=True).method
        return int(ok.message_count), int(ok.consumer_count)
    finally:
        connection.close()
