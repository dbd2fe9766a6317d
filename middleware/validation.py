"""Validation: dead-letters a message that does not match its actor's contract.

The contract check is handed in by ``brokers.setup`` (``validate(actor_name, arguments, options)``
raising ``ValueError`` with a message naming the bad field; the options tell an event's handler which
event it carries), so that this module knows no contract itself.
Arguments sent positionally (``actor.send(1, "x")``) are bound to the actor's parameter names first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from dramatiq import Broker, MessageProxy
from dramatiq.middleware import Middleware

from middleware.fate import reject

Validator = Callable[[str, dict[str, Any], Mapping[str, Any]], None]


class Validation(Middleware):
    """Rejects messages whose arguments do not match their contract, before the actor runs.

    (Oversized messages never get this far: the broker's consumer dead-letters them by raw size.)
    """

    def __init__(self, *, validate: Validator) -> None:
        self.validate = validate
        self._signatures: dict[str, inspect.Signature] = {}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        arguments: dict[str, Any] = message.kwargs
        if message.args:
            try:
                arguments = self._bind(broker, message)
            except TypeError as e:
                error = f"arguments do not fit {message.actor_name}: {e}"
                reject(message, "invalid_payload", "ContractError", error)
        try:
            self.validate(message.actor_name, arguments, message.options)
        except ValueError as e:
            reject(message, "invalid_payload", "ContractError", str(e))

    def _bind(self, broker: Broker, message: MessageProxy) -> dict[str, Any]:
        signature = self._signatures.get(message.actor_name)
        if signature is None:
            signature = inspect.signature(broker.get_actor(message.actor_name).fn)
            self._signatures[message.actor_name] = signature
        return dict(signature.bind_partial(*message.args, **message.kwargs).arguments)
