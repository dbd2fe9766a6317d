"""Circuit breakers: a message whose provider's breaker is open waits until it half-opens.

The breakers themselves (one per provider, shared through Redis, and the ``guard`` that provider
adapters wrap their calls in) live in ``middleware.breaker_storage``, which does not import
dramatiq. This middleware makes Dramatiq act on them:

- when a guard inside an actor raises ``CircuitOpenError`` and the actor lets it escape, the message
  is re-enqueued to ``Q.DQ`` with the breaker's ``retry_after`` (plus up to ``jitter`` of it) and the
  attempt ends as a skipped message: acked, not failed, no retry spent, nothing dead-lettered, and
  ``Retries`` never sees it. The message counts its delays in the ``circuit_delays`` option;
- an actor (or a message) with the option ``circuit_breaker="sendgrid"`` (or a list of providers) is
  delayed the same way before it runs, while that breaker refuses calls;
- at worker boot, the listeners hear every breaker's state (metrics start from a known value).

An actor that would rather fall back to another channel catches ``CircuitOpenError`` itself (or
asks ``get_breakers().is_open(provider)`` first) and does not declare ``circuit_breaker``.

If re-enqueueing fails (the queue refuses the publish, the broker connection is down), the message
is not acked as if delayed: before it runs, it is dead-lettered with reason ``requeue_failed``
(never run while its breaker is open); from inside the actor, the ``CircuitOpenError`` is raised to
``Retries`` like any transient error, which retries it (or, if that publish fails too,
dead-letters it with reason ``requeue_failed``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import random
from collections.abc import Callable
from typing import Any, cast

from dramatiq import Actor, Broker, Message, MessageProxy, Worker
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage

from middleware.breaker_storage import (
    BreakerRegistry,
    CircuitOpenError,
    get_breakers,
    guard,
    install,
)
from middleware.fate import reject

__all__ = ["CircuitBreakers", "CircuitOpenError", "UnknownProviderError", "get_breakers", "guard"]

logger = logging.getLogger(__name__)

#: The actor (or message) option naming the provider(s) an actor depends on.
OPTION = "circuit_breaker"
#: The message option counting how many times the breakers delayed the message.
DELAYS_OPTION = "circuit_delays"

_current: contextvars.ContextVar[MessageProxy | None] = contextvars.ContextVar(
    "edujobs_breaker_message", default=None
)


class UnknownProviderError(MiddlewareError):
    """Raised when an actor's ``circuit_breaker`` option names a provider without a breaker."""


class CircuitBreakers(Middleware):
    """Delays, rather than retries, the messages of a provider whose circuit breaker is open."""

    def __init__(self, *, breakers: BreakerRegistry, jitter: float = 0.1) -> None:
        self.breakers = breakers
        self.jitter = jitter
        install(breakers)

    @property
    def actor_options(self) -> set[str]:
        return {OPTION}

    def before_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        # emit_before lets only a MiddlewareError through: a misspelt provider stops the import.
        for provider in _providers(actor.options.get(OPTION)):
            if provider not in self.breakers.providers:
                raise UnknownProviderError(
                    f"actor {actor.actor_name}: no circuit breaker {provider!r} "
                    f"(known: {', '.join(self.breakers.providers)})"
                )

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        actor.fn = self._delaying_on_open(broker, actor.actor_name, actor.fn)

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Before the consumers start: Redis is reached (and the states known) before the first message.
        self.breakers.announce()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        _current.set(message)
        option = message.options.get(OPTION)
        if option is None and broker.actors.get(message.actor_name) is not None:
            option = broker.get_actor(message.actor_name).options.get(OPTION)
        for provider in _providers(option):
            wait = self.breakers.retry_after(provider)
            if wait > 0:
                error = CircuitOpenError(provider, wait)
                try:
                    self._delay(broker, message, error)
                except Exception as e:
                    logger.error(
                        "Could not delay message %s for the %s circuit breaker (%s); dead-lettering it.",
                        message.message_id,
                        provider,
                        type(e).__name__,
                    )
                    reject(
                        message,
                        "requeue_failed",
                        type(e).__name__,
                        f"{error}; its delay could not be enqueued: {e}",
                    )
                raise SkipMessage(f"the {provider} circuit breaker is open")

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        _current.set(None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        _current.set(None)

    def _delaying_on_open(
        self, broker: Broker, actor_name: str, fn: Callable[..., Any]
    ) -> Callable[..., Any]:
        @functools.wraps(fn)
        def delaying_on_open(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CircuitOpenError as error:
                message = _current.get()
                if message is None or message.actor_name != actor_name:
                    raise  # called directly, not by a worker for this message
                try:
                    self._delay(broker, message, error)
                except Exception:
                    logger.warning(
                        "Could not delay message %s for the %s circuit breaker; it will be retried.",
                        message.message_id,
                        error.provider,
                        exc_info=True,
                    )
                    raise error from None
                raise SkipMessage(str(error)) from None

        return delaying_on_open

    def _delay(self, broker: Broker, message: MessageProxy, error: CircuitOpenError) -> None:
        delay = max(1, int(error.retry_after * 1000))
        delay += random.randint(0, int(delay * self.jitter))
        delays = message.options.get(DELAYS_OPTION, 0)
        message.options[DELAYS_OPTION] = (delays if isinstance(delays, int) else 0) + 1
        # Like Dramatiq's Retries, enqueue the proxy: it forwards every attribute to the message.
        broker.enqueue(cast(Message[Any], message), delay=delay)
        logger.info(
            "Message %s (%s) delayed %.1f s: the %s circuit breaker is open.",
            message.message_id,
            message.actor_name,
            delay / 1000,
            error.provider,
        )


def _providers(option: object) -> tuple[str, ...]:
    if option is None:
        return ()
    if isinstance(option, str):
        return (option,)
    if isinstance(option, list | tuple) and all(isinstance(p, str) for p in option):
        return tuple(option)
    raise ValueError(f"the {OPTION} option takes a provider name or a list of them, not {option!r}")
