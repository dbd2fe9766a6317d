"""Signing: what a worker enqueues is signed — a new message anew, a derived attempt's state only.

It is the last middleware of the stack, so that its ``before_enqueue`` runs after every other one
has set the options it sets (priority, Sentry's trace headers): the signature covers the message as
it is published.

- A new message (created in this process: ``actor.send``, ``actors.base.enqueue``) has no signature:
  it gets one (``contracts.signing.sign_message``). An option edujobs does not read is refused
  there, at the sender, with ``SigningError``.
- A message derived from a received one (a retry, a delay, Dramatiq moving a delayed message to its
  queue) keeps its sender's signature, which is checked again; only its delivery state (``eta``,
  ``retries``...) is signed anew (``reseal_state``). A message that came from the broker was
  verified on receipt, and one that fails that check again here is refused, never signed.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Message, MessageProxy
from dramatiq.middleware import Middleware, MiddlewareError

from contracts.signing import SIGNATURE_OPTION, Keyring, SignatureError, reseal_state, sign_message
from middleware.fate import ORIGIN

__all__ = ["Signing", "SigningError"]


class SigningError(MiddlewareError):
    """Raised when a message to enqueue cannot be signed (refused options, a signature that does not
    match): it is not published."""


class Signing(Middleware):
    """Signs every message this process enqueues (last in the stack)."""

    def __init__(self, *, keyring: Keyring) -> None:
        self.keyring = keyring

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if isinstance(message, MessageProxy):
            message = message._message
        fields = {
            "queue_name": message.queue_name,
            "actor_name": message.actor_name,
            "args": message.args,
            "kwargs": message.kwargs,
            "options": message.options,  # the message's own dict: the signatures land in it
            "message_id": message.message_id,
            "message_timestamp": message.message_timestamp,
        }
        try:
            if SIGNATURE_OPTION in message.options:
                reseal_state(self.keyring, fields)
            elif vars(message).get(ORIGIN) is not None:
                raise SignatureError("it came from the broker unsigned: a worker never signs such a message")
            else:
                sign_message(self.keyring, fields)
        except SignatureError as e:
            raise SigningError(f"message {message.message_id} ({message.actor_name}) not sent: {e}") from None
