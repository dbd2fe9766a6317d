"""The broker set-up: the one place that lists the middleware stack, in order, and why.

``setup_broker`` builds an ``EdujobsBroker`` from settings and hands each middleware its
configuration; middleware never read settings themselves.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any

import dramatiq
import dramatiq.broker
from dramatiq import MessageProxy
from dramatiq.middleware import CurrentMessage, Middleware, ShutdownNotifications, TimeLimit

from brokers.queue_stats import metrics_directory, run_metrics_server
from brokers.rabbitmq import EdujobsBroker
from brokers.settings import Settings, get_settings
from brokers.topology import ALL_QUEUES
from contracts.errors import ContractError, PermanentError, TransientError, UnknownActorError
from contracts.events import event_envelope, get_event
from contracts.priorities import MAX_PRIORITY
from contracts.registry import ActorContract, get_contract
from middleware.age_limits import AgeLimit
from middleware.breaker_storage import BreakerRegistry
from middleware.cancellations import Cancellations
from middleware.circuit_breakers import CircuitBreakers
from middleware.crons import ScheduleCheckIns
from middleware.heartbeats import Heartbeats
from middleware.job_state import JobState
from middleware.metrics import Metrics, record_breaker_state, record_breaker_transition
from middleware.periodic import PeriodicSchedules
from middleware.priorities import Priorities
from middleware.queue_pauses import QueuePauses
from middleware.retries import Retries
from middleware.sentry import SentryReporter, init_sentry, report_breaker_transition, safe_log_message
from middleware.signatures import Signatures
from middleware.signing import Signing
from middleware.validation import Validation
from middleware.worker_tuning import WorkerTuning

logger = logging.getLogger(__name__)
_lock = threading.Lock()

#: Retries before a message is dead-lettered, unless an actor says otherwise.
DEFAULT_MAX_RETRIES = 5
#: First retry after 15 s, doubling with jitter, up to the actor's max_backoff.
DEFAULT_MIN_BACKOFF_MS = 15_000


@functools.cache
def _contract_of(actor_name: str) -> ActorContract | None:
    try:
        return get_contract(actor_name)
    except UnknownActorError:
        return None  # not an edujobs actor (every actor under actors/ has a contract)


def validate_arguments(actor_name: str, arguments: dict[str, Any], options: Mapping[str, Any]) -> None:
    """Check an actor's arguments against its contract, or an event handler's against the contract
    of the event it carries; raise ``ValueError`` naming the bad field."""
    event = event_envelope(options)
    try:
        if event is not None:
            get_event(event[0]).validate(arguments)
            return
        contract = _contract_of(actor_name)
        if contract is not None:
            contract.validate(arguments)
    except (ContractError, UnknownActorError) as e:
        raise ValueError(str(e)) from None


def build_middleware(settings: Settings) -> list[Middleware]:
    """The middleware stack, outermost first. Order matters:

    - WorkerTuning first: it sets the prefetch before consumers start;
    - Metrics (unless EDUJOBS_METRICS_PORT is 0) next, outermost of the per-message hooks: its
      before_process_message sees every message, even those the next ones reject, and its after hooks
      run last, once Retries has decided whether the message runs again or is dead-lettered;
    - Heartbeats (unless EDUJOBS_HEARTBEAT_SECONDS is 0) next: its before_process_message sees
      every message, so its in-flight count goes down again in after_skip_message;
    - QueuePauses (unless EDUJOBS_OPERATOR_POLL_SECONDS is 0): only worker hooks; it stops and
      restarts the consumers of the queues operators pause and resume;
    - Signatures, then Validation: a message that is unsigned, tampered with, carries an option
      edujobs does not read, or is too large or invalid is dead-lettered before any other middleware
      (or the actor) acts on it (on RabbitMQ the consumer has checked the signature on receipt
      already; Signatures checks what came another way);
    - Cancellations (unless EDUJOBS_OPERATOR_POLL_SECONDS is 0) right after them: a sound message
      of a cancelled job is skipped before anything else acts on it;
    - AgeLimit (Dramatiq's, with reason ``age_limit``), TimeLimit, ShutdownNotifications: Dramatiq's
      guards around every message;
    - CurrentMessage: lets actors read their message's options (idempotency key, message id);
    - JobState: records running / succeeded / failed / dead in batches; it sits before Retries so
      that, in the reversed after-chain, it sees whether Retries re-enqueued or failed the message;
    - Priorities: gives new messages sent by workers their actor's AMQP priority (Dramatiq's
      Callbacks and Pipelines are not in the stack: their options, ``on_success``, ``pipe_target``,
      would let whoever writes a message choose what runs next, and edujobs refuses them);
    - CircuitBreakers after everything that may reject or skip a message on its own, so that only
      sound messages are delayed while their provider's breaker is open; it has no say in the
      after-chain: a CircuitOpenError escaping an actor becomes a skipped, re-enqueued message that
      Retries never sees (no retry spent, nothing dead-lettered);
    - SentryReporter (when a DSN is set) just before Retries: in the after-chain it runs right after
      Retries, so it sees which failures are final and keeps their stack trace for the one event it
      sends per dead letter (``after_dead_letter``); ScheduleCheckIns beside it for the same reason;
    - Retries last among the after_process_message hooks that decide a message's fate, so that
      everything before it sees the attempt's outcome first;
    - Signing last of all: its before_enqueue signs what the worker publishes once every other
      middleware has set the options it sets (the priority, Sentry's trace headers).
    """
    keyring = settings.keyring()
    return [
        WorkerTuning(queue_prefetch=settings.queue_prefetch),
        *metrics(settings),
        *heartbeats(settings),
        *queue_pauses(settings),
        Signatures(keyring=keyring),
        Validation(validate=validate_arguments),
        *cancellations(settings),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        CurrentMessage(),
        *job_state(settings),
        Priorities(default=5),
        PeriodicSchedules(),
        circuit_breakers(settings),
        *sentry_reporter(settings),
        Retries(
            max_retries=DEFAULT_MAX_RETRIES, min_backoff=DEFAULT_MIN_BACKOFF_MS, permanent=(PermanentError,)
        ),
        Signing(keyring=keyring),
    ]


def job_state(settings: Settings) -> list[Middleware]:
    if not settings.record_job_state:
        return []
    from store.job_batch import BatchJobRecorder

    return [JobState(recorder=BatchJobRecorder(_engine(settings.database_url)))]


@functools.cache
def _engine(url: str) -> Any:
    """One engine per database for the middleware of this process. The middleware write only job
    state (a crash may lose its last batch anyway), so on SQLite their commits are not synced to
    disk one by one; the actors' own engine (the ledger) still is."""
    from store.db import make_engine

    return make_engine(url, sync_each_commit=False)


def heartbeats(settings: Settings) -> list[Middleware]:
    if settings.heartbeat_seconds == 0:
        return []
    from brokers.queue_depths import QueueDepthSampler
    from store.workers import HeartbeatRecorder

    recorder = HeartbeatRecorder(
        _engine(settings.database_url), forget_seconds=settings.heartbeat_forget_hours * 3600
    )
    sampler = QueueDepthSampler(settings.rabbitmq_url)
    return [
        Heartbeats(
            recorder=recorder,
            interval=settings.heartbeat_seconds,
            pool=settings.worker_pool,
            sample_queues=lambda queues: recorder.sample(sampler.depths(queues)),
        )
    ]


def queue_pauses(settings: Settings) -> list[Middleware]:
    if settings.operator_poll_seconds == 0:
        return []
    from store.pauses import paused_queues

    engine = _engine(settings.database_url)
    return [
        QueuePauses(paused_queues=lambda: paused_queues(engine).keys(), poll=settings.operator_poll_seconds)
    ]


def cancellations(settings: Settings) -> list[Middleware]:
    if settings.operator_poll_seconds == 0:
        return []
    from store.jobs import cancelled_since

    engine = _engine(settings.database_url)
    return [
        Cancellations(
            cancelled_since=lambda since: cancelled_since(engine, since), poll=settings.operator_poll_seconds
        )
    ]


def metrics(settings: Settings) -> list[Middleware]:
    if settings.metrics_port == 0:
        return []
    return [Metrics(directory=metrics_directory(settings.metrics_dir), exposition=run_metrics_server)]


def circuit_breakers(settings: Settings) -> CircuitBreakers:
    registry = BreakerRegistry(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_timeout,
        redis_url=settings.redis_url,
        namespace=settings.breaker_namespace,
    )
    registry.add_listener(lambda provider, old, new: record_breaker_state(provider, new))
    registry.add_listener(record_breaker_transition)
    if settings.sentry_dsn:
        # One Sentry event per opening: per process by its opened_at, across processes by a Redis claim.
        registry.add_listener(
            lambda provider, old, new: report_breaker_transition(
                provider, old, new, opened_at=registry.opened_at(provider), claim=registry.claim
            )
        )
    return CircuitBreakers(breakers=registry)


def sentry_reporter(settings: Settings) -> list[Middleware]:
    return [SentryReporter(), ScheduleCheckIns()] if settings.sentry_dsn else []


def start_sentry(settings: Settings) -> None:
    """Start Sentry, when a DSN is set, before any broker exists: its Dramatiq integration patches
    ``Broker.__init__`` to add its middleware (scopes, breadcrumbs, the ``dramatiq`` context)."""
    if settings.sentry_dsn:
        init_sentry(
            dsn=settings.sentry_dsn,
            environment=settings.sentry_environment or settings.environment,
            release=settings.sentry_release,
            server_name=settings.worker_name,
            traces_sample_rate=settings.sentry_traces_sample_rate,
        )


def build_broker(settings: Settings) -> EdujobsBroker:
    return EdujobsBroker(
        url=settings.rabbitmq_url,
        max_priority=MAX_PRIORITY,
        queue_type=settings.queue_type,
        dead_letter_ttl_ms=settings.dead_letter_ttl_ms,
        worker_name=settings.worker_name,
        keyring=settings.keyring(),
        max_message_bytes=settings.max_payload_bytes,
        middleware=build_middleware(settings),
        park_threshold_ms=int(settings.park_threshold_seconds * 1000),
        park_hop_ms=int(settings.park_hop_seconds * 1000),
    )


class _WorkerLogFilter(logging.Filter):
    """Keeps personal data out of Dramatiq's worker log and drops one noisy warning.

    Dramatiq's "Failed to process message %s" lines format the whole message, arguments included
    (names, emails, phone numbers): they are rewritten to show the actor and message id only.
    Dramatiq also warns when an actor returns a value without the Results middleware; edujobs actors
    return a small summary on purpose, which JobState records.

    Dramatiq logs every failed attempt at ERROR with its traceback. A ``TransientError`` is an
    expected failure that is retried (the dead letter keeps the traceback if it comes to that):
    it is logged at WARNING in one line, and one that does not spend a retry
    (``InProgressError``: another attempt holds the side effect) at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "haven't added the Results middleware" in str(record.msg):
            return False
        exception = record.exc_info[1] if record.exc_info else None
        if isinstance(exception, TransientError) and record.levelno >= logging.ERROR:
            level = logging.WARNING if exception.spends_retry else logging.INFO
            if not logging.getLogger(record.name).isEnabledFor(level):
                return False
            message = next((a for a in record.args or () if isinstance(a, MessageProxy)), None)
            what = f"{message.actor_name}({message.message_id})" if message is not None else "a message"
            record.levelno, record.levelname = level, logging.getLevelName(level)
            record.msg, record.args = (
                "Message %s failed with %s; it will be retried.",
                (what, type(exception).__name__),
            )
            record.exc_info, record.exc_text = None, None
            return True
        safe = safe_log_message(record)
        if safe is not None:
            record.msg, record.args = safe[0], ()
        return True


def setup_broker(settings: Settings | None = None, *, declare: bool = False) -> dramatiq.Broker:
    worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
    if not any(isinstance(f, _WorkerLogFilter) for f in worker_logger.filters):
        worker_logger.addFilter(_WorkerLogFilter())
    with _lock:
        existing = dramatiq.broker.global_broker
        if existing is None:
            settings = settings or get_settings()
            start_sentry(settings)
            existing = build_broker(settings)
            dramatiq.set_broker(existing)
            logger.debug("RabbitMQ broker set up.")
        if declare and isinstance(existing, EdujobsBroker):
            existing.declare_topology(ALL_QUEUES)
        return existing
