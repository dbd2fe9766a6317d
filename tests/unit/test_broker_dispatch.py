"""EdujobsBroker calls only the middleware that define a hook, in Dramatiq's order and with its
error handling, and notices middleware added later."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from dramatiq.middleware import Middleware, MiddlewareError

from brokers.rabbitmq import EdujobsBroker


class Recording(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_ack(self, broker: Any, message: Any) -> None:
        self.calls.append(f"before {self.name}")

    def after_ack(self, broker: Any, message: Any) -> None:
        self.calls.append(f"after {self.name}")


class Failing(Middleware):
    def before_ack(self, broker: Any, message: Any) -> None:
        raise RuntimeError("boom")


class Refusing(Middleware):
    def before_ack(self, broker: Any, message: Any) -> None:
        raise MiddlewareError("no")


class Silent(Middleware):
    """Defines no hook: never called."""


def broker_with(*middleware: Middleware) -> EdujobsBroker:
    return EdujobsBroker(
        url="amqp://guest:guest@127.0.0.1:1/",
        max_priority=9,
        dead_letter_ttl_ms=1000,
        worker_name="test",
        middleware=list(middleware),
    )


def test_hooks_run_in_order_and_after_hooks_in_reverse() -> None:
    calls: list[str] = []
    broker = broker_with(Recording("a", calls), Silent(), Recording("b", calls))

    broker.emit_before("ack", None)
    broker.emit_after("ack", None)

    assert calls == ["before a", "before b", "after b", "after a"]
    assert len(broker._hooks("before_ack")) == 2
    assert broker._hooks("before_process_message") == ()


def test_a_middleware_added_later_is_called() -> None:
    calls: list[str] = []
    broker = broker_with(Recording("a", calls))
    broker.emit_before("ack", None)

    broker.add_middleware(Recording("late", calls))
    broker.emit_before("ack", None)

    assert calls == ["before a", "before a", "before late"]


def test_a_failing_hook_is_logged_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    broker = broker_with(Failing(), Recording("b", calls))

    with caplog.at_level(logging.CRITICAL):
        broker.emit_before("ack", None)

    assert calls == ["before b"]
    assert "Unexpected failure in before_ack" in caplog.text


def test_a_middleware_error_stops_the_signal() -> None:
    calls: list[str] = []
    broker = broker_with(Refusing(), Recording("b", calls))

    with pytest.raises(MiddlewareError):
        broker.emit_before("ack", None)
    assert calls == []
