"""Signatures: workers sign what they enqueue and dead-letter what is unsigned or tampered with.

The signing itself (``sign_fields``, ``canonical_bytes``, ``SIGNATURE_OPTION``) lives in
``contracts.signing``, which producers import without dramatiq; this middleware applies it inside
workers.
"""

from __future__ import annotations

import hmac
from typing import Any

from dramatiq import Broker, Message, MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from contracts.signing import SIGNATURE_OPTION, sign_fields

__all__ = ["SIGNATURE_OPTION", "Signatures", "reject", "sign_fields"]


class Signatures(Middleware):
    """Signs every message a worker enqueues and dead-letters every message whose signature is
    missing or wrong (reason ``bad_signature``) before any other middleware or the actor sees it."""

    def __init__(self, *, key: bytes) -> None:
        self.key = key

    def _signature(self, message: Message[Any] | MessageProxy) -> str:
        if isinstance(message, MessageProxy):
            message = message._message  # skip the proxy's __getattr__ on the hot path
        return sign_fields(
            self.key,
            message_id=message.message_id,
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            message_timestamp=message.message_timestamp,
        )

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # A retry keeps the signature it was verified with; a new message gets one.
        if SIGNATURE_OPTION not in message.options:
            message.options[SIGNATURE_OPTION] = self._signature(message)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        given = message.options.get(SIGNATURE_OPTION)
        if not isinstance(given, str):
            problem = "the message is not signed"
        elif not hmac.compare_digest(given, self._signature(message)):
            problem = "the signature does not match the message (tampered, or signed with another key)"
        else:
            return
        reject(message, "bad_signature", "SignatureError", problem)


def reject(message: MessageProxy, reason: str, exception_type: str, error: str) -> None:
    """Dead-letter ``message`` from a ``before_process_message`` hook with a reason and error."""
    message.options["dead_letter_reason"] = reason
    message.options["dead_letter_exception"] = exception_type
    message.fail()
    raise SkipMessage(error)
