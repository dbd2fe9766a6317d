"""Circuit breakers of the providers and the guard around their calls, importable without dramatiq.

One ``Breaker`` per provider (``sendgrid``, ``twilio``, ``fcm``, ``storage``) lives in a
``BreakerRegistry``; ``brokers.setup`` builds it from the settings and the ``CircuitBreakers``
middleware installs it for the process. A provider adapter wraps the call itself::

    from middleware.breaker_storage import guard

    with guard("sendgrid"):
        response = client.send(body)  # translate the SDK's errors inside the block

pybreaker's ``CircuitBreaker.call`` holds the breaker's lock for the whole call, which would
serialise every thread of a worker behind one provider. The guard uses pybreaker's states,
transitions and storage, but holds its own lock only to check the state before the call and to
record the outcome after it; the call itself runs unlocked, as many at once as there are threads.

What an outcome means (``classify``): a ``TransientError`` (5xx, timeout, connection error: the
adapters raise ``ProviderUnavailableError``) or an ``OSError`` is a failure; no exception, a
``PermanentError`` (a 4xx, a refused recipient) or a ``RateLimitedError`` (429) means the provider
answered, so it is a success (as pybreaker counts an excluded exception); anything else (a bug of
ours, an interrupt) counts neither way.

closed → open after ``fail_max`` consecutive failures; open → half-open once ``reset_timeout``
seconds have passed, when one trial call per process goes ahead (the other callers wait
``trial_wait``); a successful trial closes the breaker, a failed one opens it again. While the
breaker refuses calls the guard raises ``CircuitOpenError`` (a ``TransientError``) carrying
``provider`` and ``retry_after``, the seconds until it lets a call through again.

Shared state: with a Redis URL every breaker keeps its state in Redis (pybreaker's
``CircuitRedisStorage``, namespace ``<namespace>:<provider>``), so the failures of every worker
process count together and all of them see an opening. Without Redis, or while Redis does not
answer, a breaker keeps its state in process memory (logged once, never an error) and tries Redis
again every ``redis_retry_interval`` seconds.

Falling back to another channel: catch ``CircuitOpenError`` around the call and try the user's next
channel, or ask ``get_breakers().is_open(provider)`` before choosing one. ``add_listener`` hears
every transition as ``listener(provider, old_state, new_state)`` (metrics, Sentry); listeners run
outside the breaker's lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

import pybreaker
import redis
from redis.exceptions import RedisError

from contracts.errors import PermanentError, RateLimitedError, TransientError

logger = logging.getLogger(__name__)

PROVIDERS = ("sendgrid", "twilio", "fcm", "storage")
STATE_CLOSED = pybreaker.STATE_CLOSED
STATE_OPEN = pybreaker.STATE_OPEN
STATE_HALF_OPEN = pybreaker.STATE_HALF_OPEN

Outcome = Literal["failure", "success", "neither"]
#: ``listener(provider, old_state, new_state)``; ``old_state`` is None when announcing the state at boot.
Listener = Callable[[str, str | None, str], object]
T = TypeVar("T")


class CircuitOpenError(TransientError):
    """Raised by a guard when its provider's breaker refuses calls; the call was not attempted."""

    def __init__(self, provider: str, retry_after: float) -> None:
        super().__init__(
            f"the {provider} circuit breaker is open; retry in {retry_after:.1f} s", retry_after=retry_after
        )
        self.provider = provider
        self.retry_after: float = retry_after


def classify(exc: BaseException) -> Outcome:
    """What an exception raised inside a guard says about the provider's health."""
    if isinstance(exc, CircuitOpenError):
        return "neither"
    if isinstance(exc, PermanentError | RateLimitedError):
        return "success"
    if isinstance(exc, TransientError | OSError):
        return "failure"
    return "neither"


# -- storage --------------------------------------------------------------------------------------


class _RedisDownError(Exception):
    """Raised instead of a ``RedisError`` so that ``FailoverStorage`` sees it (CircuitRedisStorage
    would catch it, log a traceback on every call and carry on as if the breaker were closed)."""


class _ReportingRedis:
    """A Redis client whose errors surface as ``_RedisDownError``."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except RedisError as e:
                raise _RedisDownError(f"{type(e).__name__}: {e}") from e

        return call


class FailoverStorage(pybreaker.CircuitBreakerStorage):
    """A breaker's state in Redis while Redis answers, in process memory while it does not.

    Every change is also written to memory, so a breaker that loses Redis keeps its last state.
    """

    def __init__(
        self,
        provider: str,
        *,
        connect: Callable[[], pybreaker.CircuitBreakerStorage] | None,
        retry_interval: float = 10.0,
    ) -> None:
        super().__init__("failover")
        self.provider = provider
        self._connect = connect
        self._retry_interval = retry_interval
        self._memory = pybreaker.CircuitMemoryStorage(STATE_CLOSED)
        self._shared: pybreaker.CircuitBreakerStorage | None = None
        self._down = False
        self._retry_at = 0.0

    @property
    def shared(self) -> bool:
        """Whether the state lives in Redis right now."""
        return self._connect is not None and self._shared is not None and not self._down

    def _shared_storage(self) -> pybreaker.CircuitBreakerStorage | None:
        if self._connect is None or (self._down and time.monotonic() < self._retry_at):
            return None
        if self._shared is None:
            try:
                self._shared = self._connect()
            except _RedisDownError as e:
                self._went_down(e)
                return None
        return self._shared

    def _went_down(self, error: Exception) -> None:
        self._retry_at = time.monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            logger.warning(
                "Redis does not answer (%s): the %s circuit breaker keeps its state in this process "
                "and tries Redis again every %.0f s.",
                error,
                self.provider,
                self._retry_interval,
            )

    def _read(self, op: Callable[[pybreaker.CircuitBreakerStorage], T]) -> T:
        shared = self._shared_storage()
        if shared is not None:
            try:
                value = op(shared)
            except _RedisDownError as e:
                self._went_down(e)
            else:
                if self._down:
                    self._down = False
                    logger.info("Redis answers again: the %s breaker shares its state.", self.provider)
                return value
        return op(self._memory)

    def _write(self, op: Callable[[pybreaker.CircuitBreakerStorage], object]) -> None:
        self._read(op)
        if self.shared:
            op(self._memory)

    @property
    def state(self) -> str:
        return self._read(lambda s: s.state)

    @state.setter
    def state(self, state: str) -> None:
        self._write(lambda s: setattr(s, "state", state))

    def increment_counter(self) -> None:
        self._write(lambda s: s.increment_counter())

    def reset_counter(self) -> None:
        self._write(lambda s: s.reset_counter())

    def increment_success_counter(self) -> None:
        self._write(lambda s: s.increment_success_counter())

    def reset_success_counter(self) -> None:
        self._write(lambda s: s.reset_success_counter())

    @property
    def counter(self) -> int:
        return self._read(lambda s: s.counter)

    @property
    def success_counter(self) -> int:
        return self._read(lambda s: s.success_counter)

    @property
    def opened_at(self) -> datetime | None:
        return self._read(lambda s: s.opened_at)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._write(lambda s: setattr(s, "opened_at", now))


# -- one breaker ----------------------------------------------------------------------------------


class _Notifier(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: Breaker) -> None:
        self.breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self.breaker._pending.append((old_state.name if old_state else None, new_state.name))


class Breaker:
    """One provider's circuit breaker: pybreaker's state machine, without its call-long lock."""

    def __init__(
        self,
        provider: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        classify: Callable[[BaseException], Outcome] = classify,
        listeners: Sequence[Listener] = (),
        trial_wait: float = 1.0,
    ) -> None:
        self.provider = provider
        self.storage = storage or pybreaker.CircuitMemoryStorage(STATE_CLOSED)
        self.classify = classify
        self.trial_wait = min(trial_wait, reset_timeout)
        #: Transitions this process saw, by new state: a count of openings, closings, trials.
        self.transitions: Counter[str] = Counter()
        self._listeners = listeners
        self._pending: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()
        self._trial_since: float | None = None
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self.storage,
            listeners=[_Notifier(self)],
            name=provider,
        )

    @property
    def fail_max(self) -> int:
        return self._cb.fail_max

    @property
    def reset_timeout(self) -> float:
        return self._cb.reset_timeout

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``, as the (shared) storage says now."""
        with self._locked():
            return self._cb.state.name

    @property
    def opened_at(self) -> datetime | None:
        return self.storage.opened_at

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block if the breaker allows it, and record how it went; raise ``CircuitOpenError``
        without running it otherwise."""
        trial = self.before_call()
        try:
            yield
        except BaseException as exc:
            self.on_failure(exc, trial=trial)
            raise
        self.on_success(trial=trial)

    def before_call(self) -> bool:
        """Let a call go ahead (True when it is the half-open trial) or raise ``CircuitOpenError``.

        Pair every call that returns with ``on_success`` or ``on_failure`` (``guard`` does)."""
        with self._locked():
            state = self._cb.state.name
            if state == STATE_OPEN:
                remaining = self._remaining_open()
                if remaining > 0:
                    raise CircuitOpenError(self.provider, remaining)
                self._cb.half_open()
                state = STATE_HALF_OPEN
            if state == STATE_HALF_OPEN:
                if self._trial_running():
                    raise CircuitOpenError(self.provider, self.trial_wait)
                self._trial_since = time.monotonic()
                return True
            return False

    def on_success(self, *, trial: bool = False) -> None:
        with self._locked():
            if trial:
                self._trial_since = None
            self.storage.reset_counter()
            if trial and self._cb.state.name == STATE_HALF_OPEN:
                self.storage.increment_success_counter()
                if self.storage.success_counter >= self._cb.success_threshold:
                    self._cb.close()

    def on_failure(self, exc: BaseException, *, trial: bool = False) -> None:
        outcome = self.classify(exc)
        if outcome == "success":
            self.on_success(trial=trial)
            return
        with self._locked():
            if trial:
                self._trial_since = None
            if outcome == "neither":
                return
            self.storage.increment_counter()
            state = self._cb.state.name
            # Only the trial decides in half-open; a call that began before the opening decides nothing.
            if (trial and state == STATE_HALF_OPEN) or (
                state == STATE_CLOSED and self.storage.counter >= self._cb.fail_max
            ):
                self._cb.open()

    def retry_after(self) -> float:
        """Seconds until the breaker lets a call through; 0 when one may go ahead now."""
        with self._locked():
            state = self._cb.state.name
            if state == STATE_OPEN:
                return max(0.0, self._remaining_open())
            if state == STATE_HALF_OPEN and self._trial_running():
                return self.trial_wait
            return 0.0

    def _remaining_open(self) -> float:
        opened_at = self.storage.opened_at
        if opened_at is None:
            return 0.0
        return (opened_at - datetime.now(UTC)).total_seconds() + self._cb.reset_timeout

    def _trial_running(self) -> bool:
        # A trial whose caller never reported back (misuse of before_call) is given up after a while.
        since = self._trial_since
        return since is not None and time.monotonic() - since < max(self._cb.reset_timeout, 30.0)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self._lock:
                yield
        finally:
            self._dispatch()

    def _dispatch(self) -> None:
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, []
        for old, new in pending:
            self.transitions[new] += 1
            level = logging.WARNING if new == STATE_OPEN else logging.INFO
            logger.log(level, "Circuit breaker %s: %s -> %s.", self.provider, old, new)
            self._notify(old, new)

    def _notify(self, old: str | None, new: str) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(self.provider, old, new)
            except Exception:
                logger.exception("A listener of the %s circuit breaker failed.", self.provider)


# -- the providers' breakers ----------------------------------------------------------------------


class BreakerRegistry:
    """The breakers of a process, one per provider, sharing their state through Redis if given one."""

    def __init__(
        self,
        *,
        providers: Sequence[str] = PROVIDERS,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        redis_url: str | None = None,
        namespace: str = "edujobs:breaker",
        redis_timeout: float = 0.5,
        redis_retry_interval: float = 10.0,
        classify: Callable[[BaseException], Outcome] = classify,
    ) -> None:
        self.providers = tuple(providers)
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.namespace = namespace
        self.redis_retry_interval = redis_retry_interval
        self.classify = classify
        self.listeners: list[Listener] = []
        # No decode_responses: CircuitRedisStorage decodes the bytes itself. Nothing connects yet.
        self.redis: redis.Redis[bytes] | None = None
        if redis_url:
            self.redis = redis.Redis.from_url(
                redis_url, socket_timeout=redis_timeout, socket_connect_timeout=redis_timeout
            )
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()

    def get(self, provider: str) -> Breaker:
        """The breaker of ``provider``, created on first use."""
        breaker = self._breakers.get(provider)
        if breaker is not None:
            return breaker
        if provider not in self.providers:
            raise KeyError(f"no circuit breaker for {provider!r}; known: {', '.join(self.providers)}")
        with self._lock:
            if provider not in self._breakers:
                self._breakers[provider] = Breaker(
                    provider,
                    fail_max=self.fail_max,
                    reset_timeout=self.reset_timeout,
                    storage=self._storage(provider),
                    classify=self.classify,
                    listeners=self.listeners,
                )
            return self._breakers[provider]

    def _storage(self, provider: str) -> FailoverStorage:
        client = self.redis
        connect: Callable[[], pybreaker.CircuitBreakerStorage] | None = None
        if client is not None:
            namespace = f"{self.namespace}:{provider}"

            def connect() -> pybreaker.CircuitBreakerStorage:
                reporting = cast("redis.Redis[bytes]", _ReportingRedis(client))
                return pybreaker.CircuitRedisStorage(STATE_CLOSED, reporting, namespace=namespace)

        return FailoverStorage(provider, connect=connect, retry_interval=self.redis_retry_interval)

    def guard(self, provider: str) -> AbstractContextManager[None]:
        """``with registry.guard("sendgrid"): ...``: see ``Breaker.guard``."""
        return self.get(provider).guard()

    def retry_after(self, provider: str) -> float:
        """Seconds until ``provider``'s breaker lets a call through; 0 when one may go ahead now."""
        return self.get(provider).retry_after()

    def is_open(self, provider: str) -> bool:
        """Whether ``provider``'s breaker refuses calls right now (choose another channel)."""
        return self.retry_after(provider) > 0

    def opened_at(self, provider: str) -> datetime | None:
        """When ``provider``'s breaker last opened (whole seconds when the state is in Redis)."""
        return self.get(provider).opened_at

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(provider, old_state, new_state)`` on every transition a breaker sees.

        With shared state, every process that notices an opening reports it: use ``claim`` to act
        once in all."""
        self.listeners.append(listener)

    def announce(self) -> None:
        """Tell the listeners every breaker's current state (``old_state`` None), e.g. at boot."""
        for provider in self.providers:
            breaker = self.get(provider)
            breaker._notify(None, breaker.state)

    def claim(self, key: str, ttl: int = 86_400) -> bool:
        """True for the first caller of ``key`` across processes sharing Redis (in this process
        alone without Redis, or when Redis does not answer): report an opening once in all."""
        if self.redis is None:
            return True
        try:
            return bool(self.redis.set(f"{self.namespace}:claimed:{key}", b"1", nx=True, ex=ttl))
        except RedisError:
            return True

    def states(self) -> dict[str, str]:
        return {provider: self.get(provider).state for provider in self.providers}


_installed: BreakerRegistry | None = None
_install_lock = threading.Lock()


def install(registry: BreakerRegistry) -> BreakerRegistry | None:
    """Make ``registry`` the process's breakers (the ``CircuitBreakers`` middleware does it); return
    the one it replaces."""
    global _installed
    with _install_lock:
        previous, _installed = _installed, registry
    return previous


def get_breakers() -> BreakerRegistry:
    """The process's breakers: the installed registry, or in-process defaults if none was."""
    global _installed
    registry = _installed
    if registry is None:
        with _install_lock:
            if _installed is None:
                _installed = BreakerRegistry()
            registry = _installed
    return registry


def guard(provider: str) -> AbstractContextManager[None]:
    """``with guard("sendgrid"): <the provider call>``: the call goes ahead only if the provider's
    breaker allows it (else ``CircuitOpenError``), and its outcome is recorded."""
    return get_breakers().guard(provider)
