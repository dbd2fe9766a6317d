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
than the one written here fails the run; ``timeout`` (seconds) bounds a test that hangs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from contracts.signing import SignatureError
from middleware.signing import SigningError


@dataclass(frozen=True)
class Expectation:
    kind: Literal["skip", "difference", "bug"]
    reason: str
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None
    timeout: float | None = None


#: Why a ``RabbitmqBroker(...)`` call of a test fails on ``EdujobsBroker`` (``plugin.edujobs_broker``).
URL_ONLY = Expectation(
    "difference",
    "EdujobsBroker takes its connection as a URL only (EDUJOBS_RABBITMQ_URL, several separated by "
    "';' for a cluster), not pika's keyword parameters (host=, credentials=, parameters=): "
    "brokers.stack builds it from settings, the one reader of the environment",
    TypeError,
)
STUB_QUEUES = Expectation(
    "skip",
    "reads or fills the StubBroker's in-memory queue (broker.queues[name].get/put), which a "
    "RabbitMQ broker does not have",
)
DEFAULT_STACK_ORDER = Expectation(
    "skip",
    "asserts the new middleware's index in Dramatiq's default stack (AgeLimit first); edujobs' "
    "stack has other middleware before AgeLimit (brokers/stack.py), and add_middleware is Dramatiq's own",
)
COMPOSITION = Expectation(
    "difference",
    "pipelines, callbacks and group completion callbacks are refused: their options (pipe_target, "
    "pipe_ignore, on_success, on_failure, group_completion_uuid...) would let whoever writes a message "
    "choose what runs next; an actor enqueues its next job itself (contracts/signing.py)",
    (SigningError, ValueError),
)
DRAMATIQ_RETRIES_LOST = Expectation(
    "difference",
    "Dramatiq's own Retries (the bare stack) is not supported: its retry carries the 'traceback' option, "
    "which edujobs refuses to sign (SigningError), so the failed message is dead-lettered with reason "
    "middleware_error (EdujobsBroker.emit_after) instead of retried: never lost, never acked as done. "
    "edujobs' Retries (middleware/retries.py) keeps the traceback out of the message",
    AssertionError,
)
ODD_ETA = Expectation(
    "difference",
    "an eta that is not a number (None included) is refused when the message is signed "
    "(SignatureError) and, unsigned, dead-lettered on receipt; Dramatiq's worker runs it at once",
    SignatureError,
)

EXPECTATIONS: dict[str, Expectation] = {
    # -- test_rabbitmq.py ----------------------------------------------------------------------
    "test_rabbitmq.py::test_rabbitmq_workers_handle_rabbit_failures_gracefully": Expectation(
        "skip",
        "it runs `rabbitmqctl stop_app` on the machine's RabbitMQ, which other test runs share; "
        "edujobs' fault harness restarts RabbitMQ under load instead",
    ),
    "test_rabbitmq.py::test_rabbitmq_broker_raises_an_error_if_given_invalid_parameter_combinations": (
        URL_ONLY
    ),
    "test_rabbitmq.py::test_rabbitmq_broker_can_be_passed_a_list_of_parameters_for_failover": URL_ONLY,
    "test_rabbitmq.py::test_rabbitmq_broker_connections_are_lazy": URL_ONLY,
    "test_rabbitmq.py::test_rabbitmq_actors_retry_with_backoff_on_failure[bare]": Expectation(
        "difference", DRAMATIQ_RETRIES_LOST.reason, TypeError
    ),
    "test_rabbitmq.py::test_rabbitmq_actors_can_retry_multiple_times[bare]": DRAMATIQ_RETRIES_LOST,
    # -- test_actors.py (stub_broker: the full EdujobsBroker on RabbitMQ) --------------------------
    "test_actors.py::test_actors_can_be_sent_messages": STUB_QUEUES,
    "test_actors.py::test_worker_handles_non_numeric_eta_and_logs_warning": STUB_QUEUES,
    "test_actors.py::test_worker_handles_none_eta": STUB_QUEUES,
    "test_actors.py::test_messages_belonging_to_missing_actors_are_rejected": Expectation(
        "difference",
        "a dead letter carries its record in options.dead_letter (reason unknown_actor, exception, "
        "attempts, times, fingerprint, worker) and the signatures and broker_priority it was sent "
        "with, so it is not equal to the message as sent",
        AssertionError,
    ),
    # -- test_broker.py ------------------------------------------------------------------------
    "test_broker.py::test_broker_uses_rabbitmq_if_not_set": Expectation(
        "skip",
        "about dramatiq.get_broker() building a RabbitmqBroker when no broker is set; edujobs sets "
        "its broker with brokers.setup() before any actor is declared",
    ),
    "test_broker.py::test_broker_middleware_can_be_added_before_other_middleware": DEFAULT_STACK_ORDER,
    "test_broker.py::test_broker_middleware_can_be_added_after_other_middleware": DEFAULT_STACK_ORDER,
    "test_broker.py::test_can_instantiate_brokers_without_middleware": URL_ONLY,
    # -- test_callbacks.py, test_composition.py --------------------------------------------------
    "test_callbacks.py::test_actors_can_define_success_callbacks": COMPOSITION,
    "test_callbacks.py::test_actors_can_define_failure_callbacks": COMPOSITION,
    "test_callbacks.py::test_actor_callback_knows_correct_number_of_retries": COMPOSITION,
    "test_composition.py::test_pipe_ignore_applies_to_receiving_message": COMPOSITION,
    "test_composition.py::test_pipeline_results_can_be_retrieved": COMPOSITION,
    "test_composition.py::test_pipeline_results_respect_timeouts": COMPOSITION,
    "test_composition.py::test_pipelines_expose_completion_stats": COMPOSITION,
    "test_composition.py::test_pipelines_can_be_incomplete": COMPOSITION,
    "test_composition.py::test_pipeline_does_not_continue_to_next_actor_when_message_is_marked_as_failed": (
        COMPOSITION
    ),
    "test_composition.py::test_pipeline_respects_own_delay": COMPOSITION,
    "test_composition.py::test_pipeline_respects_delay_of_first_message": COMPOSITION,
    "test_composition.py::test_pipeline_respects_delay_of_second_message": COMPOSITION,
    "test_composition.py::test_pipeline_respects_bigger_of_first_messages_and_pipelines_delay": COMPOSITION,
    "test_composition.py::test_groups_can_have_completion_callbacks": COMPOSITION,
    "test_composition.py::test_groups_of_pipelines_can_have_completion_callbacks": COMPOSITION,
    # -- test_messages.py ----------------------------------------------------------------------
    "test_messages.py::test_messageproxy_representation": Expectation(
        "difference",
        "a received message reads 'actor(message id)' in str and repr, not the Message with its "
        "arguments: Dramatiq logs messages with %s, and arguments carry personal data",
        AssertionError,
    ),
    # -- test_results.py -----------------------------------------------------------------------
    "test_results.py::test_actor_no_warning_when_returns_result_while_piping": COMPOSITION,
    "test_results.py::test_actor_no_warning_when_returns_result_while_piping_and_store_results_is_not_set": (
        COMPOSITION
    ),
    "test_results.py::test_age_limit_skipped_messages_store_consistent_exceptions": Expectation(
        "difference",
        "edujobs' AgeLimit says how old the message was ('the message is N ms old, over its max_age of "
        "M ms') where Dramatiq's says 'Message age limit exceeded'",
        AssertionError,
    ),
    # -- test_worker.py ------------------------------------------------------------------------
    "test_worker.py::test_workers_process_messages_in_order": Expectation(
        "skip",
        "counts the worker's in-memory work queue right after five sends, which holds at once only "
        "with the StubBroker; on RabbitMQ the consumer may not have fetched them all yet (it passes "
        "or fails by timing)",
    ),
    # -- dramatiq_behaviour.py (ours: what the sdist has no test for) -----------------------------
    "dramatiq_behaviour.py::test_retry_when_decides_whether_a_failure_is_retried[bare]": (
        DRAMATIQ_RETRIES_LOST
    ),
    "dramatiq_behaviour.py::test_on_retry_exhausted_sends_a_message_to_the_named_actor[bare]": (
        DRAMATIQ_RETRIES_LOST
    ),
    "dramatiq_behaviour.py::test_expected_failures_are_not_logged_above_info[bare]": Expectation(
        "difference",
        "Dramatiq's own Retries (the bare stack) fails a throws= exception without telling the "
        "consumer it was expected, so its dead letter (reason failed) is logged at WARNING; edujobs' "
        "Retries records it as permanent_error, logged at INFO",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_a_message_interrupted_by_shutdown_spends_a_retry[full]": Expectation(
        "difference",
        "an attempt interrupted by the worker's shutdown goes back to its queue as it is (nack with "
        "requeue), without spending a retry, even with max_retries=0: a deploy is not the job's "
        "failure (middleware/retries.py)",
        AssertionError,
    ),
    "dramatiq_behaviour.py::test_an_odd_eta_means_now": ODD_ETA,
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
    if expectation.timeout is not None:
        item.add_marker(pytest.mark.timeout(expectation.timeout))
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
