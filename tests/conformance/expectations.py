"""Which of Dramatiq's tests are expected to fail against edujobs, and why.

Every entry names a test (``file::test``, or ``file::test[full]`` / ``[bare]`` for one stack of
``rabbitmq_broker``) and is one of:

- ``skip``: the test cannot run here or says nothing about edujobs (it stops the shared RabbitMQ,
  or uses an API only Dramatiq's in-memory StubBroker has);
- ``difference``: edujobs differs from Dramatiq on purpose; the test is xfail (strict), and the
  difference is listed in README ("Differences from plain Dramatiq");
- ``bug``: an edujobs bug; the test is xfail (strict) with the reason "edujobs bug: ...", so that
  the fix turns it into an XPASS failure: then delete the entry.

``raises`` pins the exception the failure must show, so that a test failing for another reason
than the one written here fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest


@dataclass(frozen=True)
class Expectation:
    kind: Literal["skip", "difference", "bug"]
    reason: str
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None


#: Why a ``RabbitmqBroker(...)`` call of a test fails on ``EdujobsBroker`` (``plugin.edujobs_broker``).
_URL_ONLY = (
    "EdujobsBroker takes its connection as a URL only (EDUJOBS_RABBITMQ_URL, several separated by "
    "';' for a cluster), not pika's keyword parameters (host=, credentials=, parameters=): "
    "brokers.stack builds it from settings, the one reader of the environment"
)
#: Why a test that reads or fills the StubBroker's in-memory queues cannot run on RabbitMQ.
_STUB_QUEUES = (
    "reads or fills the StubBroker's in-memory queue (broker.queues[name].get/put), which a "
    "RabbitMQ broker does not have"
)

EXPECTATIONS: dict[str, Expectation] = {
    # -- test_rabbitmq.py ----------------------------------------------------------------------
    "test_rabbitmq.py::test_rabbitmq_workers_handle_rabbit_failures_gracefully": Expectation(
        "skip",
        "it runs `rabbitmqctl stop_app` on the machine's RabbitMQ, which other test runs share; "
        "edujobs' fault harness restarts RabbitMQ under load instead",
    ),
    "test_rabbitmq.py::test_rabbitmq_broker_raises_an_error_if_given_invalid_parameter_combinations": (
        Expectation("difference", _URL_ONLY, TypeError)
    ),
    "test_rabbitmq.py::test_rabbitmq_broker_can_be_passed_a_list_of_parameters_for_failover": Expectation(
        "difference", _URL_ONLY, TypeError
    ),
    "test_rabbitmq.py::test_rabbitmq_broker_connections_are_lazy": Expectation(
        "difference", _URL_ONLY, TypeError
    ),
    "test_rabbitmq.py::test_rabbitmq_consumers_ignore_unknown_messages_in_ack_and_nack": Expectation(
        "bug",
        "EdujobsConsumer.nack and EdujobsConsumer._forget (brokers/consumer.py) assert that the message "
        "is a _RabbitmqMessage, so an ack or nack of a message the consumer did not deliver raises "
        "AssertionError; Dramatiq's consumer logs 'not in known tags' and ignores it (issue 14, "
        "finding 20)",
        AssertionError,
    ),
    # -- test_actors.py (stub_broker: the full EdujobsBroker on RabbitMQ) --------------------------
    "test_actors.py::test_actors_can_be_sent_messages": Expectation("skip", _STUB_QUEUES),
    "test_actors.py::test_worker_handles_non_numeric_eta_and_logs_warning": Expectation("skip", _STUB_QUEUES),
    "test_actors.py::test_worker_handles_none_eta": Expectation("skip", _STUB_QUEUES),
    "test_actors.py::test_messages_belonging_to_missing_actors_are_rejected": Expectation(
        "difference",
        "a dead letter carries its record in options.dead_letter (reason unknown_actor, exception, "
        "attempts, times, fingerprint, worker) and, from a worker with the full stack, the signature "
        "and broker_priority it was sent with, so it is not equal to the message as sent",
        AssertionError,
    ),
    # -- test_broker.py ------------------------------------------------------------------------
    "test_broker.py::test_broker_uses_rabbitmq_if_not_set": Expectation(
        "skip",
        "about dramatiq.get_broker() building a RabbitmqBroker when no broker is set; edujobs sets "
        "its broker with brokers.setup() before any actor is declared",
    ),
    "test_broker.py::test_broker_middleware_can_be_added_before_other_middleware": Expectation(
        "skip",
        "asserts the new middleware's index in Dramatiq's default stack (AgeLimit first); edujobs' "
        "stack has other middleware before AgeLimit (brokers/stack.py), and add_middleware is "
        "Dramatiq's own",
    ),
    "test_broker.py::test_broker_middleware_can_be_added_after_other_middleware": Expectation(
        "skip",
        "asserts the new middleware's index in Dramatiq's default stack (AgeLimit first); edujobs' "
        "stack has other middleware before AgeLimit (brokers/stack.py), and add_middleware is "
        "Dramatiq's own",
    ),
    "test_broker.py::test_can_instantiate_brokers_without_middleware": Expectation(
        "difference", _URL_ONLY, TypeError
    ),
    # -- test_encoders.py ----------------------------------------------------------------------
    "test_encoders.py::test_pickle_encoder": Expectation(
        "bug",
        "with Dramatiq's PickleEncoder a message's args decode as a tuple, and decode_message's shape "
        "check (brokers/dlq.py shape_problem, called from brokers/consumer.py) accepts only a list, "
        "so every message is dead-lettered as undecodable and the actor never runs (issue 14, "
        "finding 19)",
        AssertionError,
    ),
    # -- test_results.py -----------------------------------------------------------------------
    "test_results.py::test_age_limit_skipped_messages_store_consistent_exceptions": Expectation(
        "difference",
        "edujobs' AgeLimit says how old the message was and its max_age ('the message is N ms old, "
        "over its max_age of M ms') where Dramatiq's says 'Message age limit exceeded'; the dead "
        "letter's reason is age_limit",
        AssertionError,
    ),
    # -- dramatiq_behaviour.py (ours: what the sdist has no test for) -----------------------------
    "dramatiq_behaviour.py::test_retry_when_decides_whether_a_failure_is_retried[full]": Expectation(
        "bug",
        "middleware/retries.py replaces Dramatiq's after_process_message without reading the "
        "retry_when actor option, which Dramatiq's actor_options still accept: the actor is retried "
        "max_retries times (6 attempts) instead of while retry_when says so (4) (issue 14, finding 18)",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_on_retry_exhausted_sends_a_message_to_the_named_actor[full]": Expectation(
        "bug",
        "middleware/retries.py never reads the on_retry_exhausted option, which is accepted at "
        "declaration: the named actor is never sent the exhausted message (issue 14, finding 18)",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_expected_failures_are_not_logged_above_info": Expectation(
        "bug",
        "EdujobsBroker.dead_letter (brokers/rabbitmq.py) logs every dead letter at WARNING, those of "
        "an exception the actor declared with throws= too, where Dramatiq logs an expected failure "
        "at INFO (issue 14, finding 20)",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_a_message_interrupted_by_shutdown_spends_a_retry[full]": Expectation(
        "difference",
        "an attempt interrupted by the worker's shutdown (Shutdown) is re-enqueued without spending a "
        "retry, even with max_retries=0: a deploy is not the job's failure (middleware/retries.py)",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_an_odd_eta_means_now[full-non_numeric]": (
        Expectation(
            "difference",
            "a message whose eta is not a number is dead-lettered as undecodable (kept byte for byte) "
            "where Dramatiq's worker warns and runs it at once",
            AssertionError,
        )
    ),
    "dramatiq_behaviour.py::test_an_odd_eta_means_now[bare-non_numeric]": (
        Expectation(
            "difference",
            "a message whose eta is not a number is dead-lettered as undecodable (kept byte for byte) "
            "where Dramatiq's worker warns and runs it at once",
            AssertionError,
        )
    ),
    # -- test_worker.py ------------------------------------------------------------------------
    "test_worker.py::test_workers_process_messages_in_order": Expectation(
        "skip",
        "counts the worker's in-memory work queue right after five sends, which holds at once only "
        "with the StubBroker; on RabbitMQ the consumer may not have fetched them all yet (it passes "
        "or fails by timing)",
    ),
}


def _keys(item: pytest.Item) -> tuple[str, str, str]:
    """(file, ``file::test``, ``file::test[param]``) of a collected test."""
    file = Path(str(item.fspath)).name
    name = getattr(item, "originalname", None) or item.name
    return file, f"{file}::{name}", f"{file}::{item.name}"


def mark(item: pytest.Item, expectation: Expectation) -> None:
    if expectation.kind == "skip":
        item.add_marker(pytest.mark.skip(reason=expectation.reason))
        return
    prefix = "edujobs bug" if expectation.kind == "bug" else "deliberate difference"
    item.add_marker(
        pytest.mark.xfail(reason=f"{prefix}: {expectation.reason}", strict=True, raises=expectation.raises)
    )


def apply(items: list[pytest.Item], table: dict[str, Expectation] = EXPECTATIONS) -> None:
    """Mark ``items`` from ``table``; raise ``pytest.UsageError`` for an entry of a collected file
    that names no collected test (renamed upstream, or a typo), so that the table stays true."""
    files: set[str] = set()
    used: set[str] = set()
    for item in items:
        file, by_name, by_id = _keys(item)
        files.add(file)
        for key in (by_id, by_name):
            if key in table:
                mark(item, table[key])
                used.add(key)
                break
    stale = sorted(key for key in table if key.split("::")[0] in files and key not in used)
    if stale:
        names = ", ".join(stale)
        raise pytest.UsageError(f"tests.conformance.expectations names tests that do not exist: {names}")
