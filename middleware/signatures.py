"""Signatures: a message runs only if it is signed with the key, its options are ones edujobs reads.

What a signature covers and how it is checked lives in ``contracts.signing`` (producers import it
without dramatiq). On RabbitMQ the broker's consumer checks every message as it is received, before
any delay, park, eta or retry handling (``brokers.consumer``), and marks it verified; this middleware
checks the messages that reached a worker another way (Dramatiq's ``StubBroker`` in tests), so that
no message runs unchecked whatever the broker. What fails is dead-lettered with reason
``invalid_options`` or ``bad_signature`` before any other middleware, or the actor, sees it.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, MessageProxy
from dramatiq.middleware import Middleware

from contracts.events import bound_events, event_envelope
from contracts.signing import Keyring, option_problem, verify_message
from middleware.fate import reject

__all__ = ["Signatures", "refusal"]

#: Set (True) on a message proxy whose signature the broker's consumer checked on receipt.
VERIFIED = "verified"


class Signatures(Middleware):
    """Dead-letters every message whose options are refused or whose signature is missing or wrong."""

    def __init__(self, *, keyring: Keyring) -> None:
        self.keyring = keyring

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if vars(message).get(VERIFIED) is True:
            return
        found = refusal(self.keyring, message._message.asdict())
        if found is not None:
            reason, error = found
            exception_type = {"bad_signature": "SignatureError", "wrong_queue": "QueueMismatchError"}
            reject(message, reason, exception_type.get(reason, "OptionError"), error)


def refusal(keyring: Keyring, fields: dict[str, Any]) -> tuple[str, str] | None:
    """Why a received message must not run — ``(reason, error)`` — or None when it may."""
    problem = option_problem(fields["options"])
    if problem is not None:
        return "invalid_options", problem
    event = event_envelope(fields["options"])
    actor = fields["actor_name"]
    if event is not None and actor != event[0] and event[0] not in (bound_events(actor) or ()):
        return "wrong_queue", f"event {event[0]!r} is not one that {actor!r} handles"
    problem = verify_message(keyring, fields)
    if problem is not None:
        return "bad_signature", problem
    return None
