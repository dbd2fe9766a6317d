"""The worker's log: Dramatiq's per-attempt ERROR lines, as edujobs rewrites them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import dramatiq
import pytest

from brokers.stack import _WorkerLogFilter
from contracts.errors import InProgressError, ProviderUnavailableError


@pytest.fixture(autouse=True)
def _restore_level() -> Iterator[None]:
    logger = logging.getLogger("dramatiq.worker.WorkerThread")
    level = logger.level
    yield
    logger.setLevel(level)


def attempt_record(exception: BaseException) -> logging.LogRecord:
    """The record Dramatiq's WorkerThread logs for a failed attempt (its message, level, exc_info)."""
    message = dramatiq.MessageProxy(
        dramatiq.Message(
            queue_name="q",
            actor_name="notifications.send_sms",
            args=(),
            kwargs={"phone": "+33612345678"},
            options={},
        )
    )
    try:
        raise exception
    except type(exception):
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "dramatiq.worker.WorkerThread",
        logging.ERROR,
        __file__,
        1,
        "Failed to process message %s with unhandled exception.",
        (message,),
        exc_info,
    )


@pytest.mark.parametrize(
    ("exception", "level"),
    [(ProviderUnavailableError("Twilio is down"), logging.WARNING), (InProgressError("held"), logging.INFO)],
)
def test_an_expected_transient_failure_is_one_line_without_a_traceback(
    exception: Exception, level: int
) -> None:
    record = attempt_record(exception)
    logging.getLogger(record.name).setLevel(logging.DEBUG)
    # When the worker's filter sees Dramatiq's ERROR line for a transient failure
    assert _WorkerLogFilter().filter(record)
    # Then it is one line at a lower level, naming the actor, id and error type, not the arguments
    text = record.getMessage()
    assert record.levelno == level and record.exc_info is None
    assert text.startswith("Message notifications.send_sms(") and type(exception).__name__ in text
    assert "+33612345678" not in text


def test_a_transient_failure_below_the_loggers_level_is_dropped() -> None:
    record = attempt_record(InProgressError("held"))
    logging.getLogger(record.name).setLevel(logging.WARNING)
    assert not _WorkerLogFilter().filter(record)


def test_an_unexpected_failure_keeps_its_level_and_traceback_without_the_arguments() -> None:
    record = attempt_record(RuntimeError("bug"))
    assert _WorkerLogFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "+33612345678" not in record.getMessage()
