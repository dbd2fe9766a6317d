"""Message signatures (wire format v1): what a signature covers, how it is computed and checked.

Every message carries HMAC-SHA256 signatures (lowercase hex) in its options:

- ``signature``, made by whoever creates the message (a producer, or a worker sending a new
  message), over the *sender document*: the envelope and every option except the state options
  below and the two signatures themselves::

      {"actor_name": ..., "args": [...], "kwargs": {...}, "message_id": ...,
       "message_timestamp": ..., "options": {...}, "queue_name": <queue, without .DQ>}

  It never changes while the message lives: retries, delays and requeues keep it.
- ``state_signature``, present exactly when one of the ``STATE_OPTIONS`` is (the delivery state
  that changes between attempts: ``eta``, ``retries``...), over
  ``{"signature": <signature>, "state": {<the state options>}}``. A producer that delays a message
  makes it (for ``eta``); a worker makes it again whenever it derives the next attempt of a message
  it verified on receipt. It binds the state to the message, so a state cannot be moved to another
  message or changed without the key. Removing the state (and its signature) gives the message as
  its sender made it: that is a replay, which the ledger's idempotency keys absorb; ``not_before``,
  a sender option, keeps a delayed message delayed even then.

Both are computed over the document's canonical JSON, RFC 8785 (JCS), which any language can
reproduce byte for byte (``docs/wire-format.md`` has test vectors). Integers must lie within
±(2^53 - 1) (JCS numbers are IEEE doubles). ``canonical_json`` serialises a value with no float and
no object key outside the Basic Multilingual Plane with orjson (sorted keys, 53-bit integers),
which is then byte for byte what RFC 8785 gives, at a twentieth of the pure-Python library's cost;
anything else goes to ``rfc8785``.

Options are a closed set: ``OPTION_TYPES`` names every option edujobs reads and the type each must
have; any other option (Dramatiq's ``pipe_target``, ``on_success``, ``throws``...) is refused, signed
or not, because edujobs does not use it and an attacker could.

Keys rotate through a ``Keyring``: it signs with its current key and accepts the current key and any
other listed key when verifying (README, "Rotating the signing key").

An event is signed like any message, over the envelope its publisher wrote (``sender_document``),
so that the copy each handler runs, and every retry of it, keeps one signature.

This module imports neither dramatiq nor any project module but ``contracts.priorities`` and
``contracts.events``, so that
producers (``brokers.client``) and operators' tools sign without loading workers' code.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import rfc8785

from contracts.events import event_envelope
from contracts.priorities import MAX_PRIORITY, PRIORITIES

#: The option that carries the sender's signature.
SIGNATURE_OPTION = "signature"
#: The option that carries the signature of the delivery state.
STATE_SIGNATURE_OPTION = "state_signature"
SIGNATURE_OPTIONS = frozenset({SIGNATURE_OPTION, STATE_SIGNATURE_OPTION})

#: Options that change between attempts, set by the client (``eta``) and by workers.
STATE_OPTIONS = frozenset(
    {
        "eta",
        "retries",
        "requeue_timestamp",
        "first_failure_at",
        "circuit_delays",
        "requeued_from",
        # Sentry's Dramatiq integration writes its trace headers at every enqueue, retries included.
        "_sentry_headers",
    }
)

#: Largest integer a canonical document may hold (JSON numbers are doubles to most languages).
MAX_SAFE_INTEGER = 2**53 - 1


def _integer(low: int, high: int = MAX_SAFE_INTEGER) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not int:
            return "an integer"
        if not low <= value <= high:
            return f"an integer from {low} to {high}"
        return None

    return check


def _number(value: object) -> str | None:
    if isinstance(value, int | float) and type(value) is not bool and 0 <= value <= MAX_SAFE_INTEGER:
        return None
    return "a number of ms"


def _text(limit: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not str or not 0 < len(value) <= limit:
            return f"a string of 1 to {limit} characters"
        return None

    return check


def _priority_name(value: object) -> str | None:
    return None if value in PRIORITIES and type(value) is str else f"one of {', '.join(PRIORITIES)}"


def _providers(value: object) -> str | None:
    if type(value) is str and value:
        return None
    if type(value) is list and 0 < len(value) <= 8 and all(type(p) is str and p for p in value):
        return None
    return "a provider name or a list of them"


def _schedule_monitor(value: object) -> str | None:
    expected = "an object of crontab (string), timezone (string) and checkin_margin (minutes, 1-1440)"
    if type(value) is not dict or set(value) - {"crontab", "timezone", "checkin_margin"}:
        return expected
    crontab, timezone, margin = value.get("crontab"), value.get("timezone"), value.get("checkin_margin")
    if type(crontab) is not str or not 0 < len(crontab) <= 200:
        return expected
    if timezone is not None and (type(timezone) is not str or not 0 < len(timezone) <= 64):
        return expected
    if margin is not None and (type(margin) is not int or not 1 <= margin <= 1440):
        return expected
    return None


def _string_map(value: object) -> str | None:
    if type(value) is not dict or len(value) > 8:
        return "an object of up to 8 strings"
    if any(
        type(k) is not str or (v is not None and type(v) is not str) or len(v or "") > 4096
        for k, v in value.items()
    ):
        return "an object of up to 8 strings"
    return None


def _requeued_from(value: object) -> str | None:
    if type(value) is not dict or len(value) > 16 or any(type(k) is not str for k in value):
        return "an object"
    if any(v is not None and type(v) not in (str, int) for v in value.values()):
        return "an object of strings and integers"
    return None


_MS = _integer(0)
_POSITIVE_MS = _integer(1)

#: Every option edujobs reads, and what its value must be (a checker returns what was expected,
#: or None when the value is fine). Anything else in ``options`` is refused.
OPTION_TYPES: dict[str, Callable[[object], str | None]] = {
    # The sender's, covered by ``signature``:
    "idempotency_key": _text(512),
    "priority_name": _priority_name,
    "broker_priority": _integer(0, MAX_PRIORITY),
    "max_age": _POSITIVE_MS,
    "time_limit": _POSITIVE_MS,
    "max_retries": _integer(0, 1000),
    "min_backoff": _MS,
    "max_backoff": _MS,
    "not_before": _MS,
    "schedule": _text(200),
    "schedule_monitor": _schedule_monitor,
    "circuit_breaker": _providers,
    # An event's (``contracts.events``): its name, id and when it happened.
    "event": _text(200),
    "event_id": _text(200),
    "occurred_at": _MS,
    # The delivery state, covered by ``state_signature``:
    "eta": _number,
    "retries": _integer(0, 1_000_000),
    "requeue_timestamp": _MS,
    "first_failure_at": _MS,
    "circuit_delays": _integer(0, 1_000_000),
    "requeued_from": _requeued_from,
    "_sentry_headers": _string_map,
    # The signatures:
    SIGNATURE_OPTION: lambda value: None if _is_hex_digest(value) else "a hex HMAC-SHA256",
    STATE_SIGNATURE_OPTION: lambda value: None if _is_hex_digest(value) else "a hex HMAC-SHA256",
}

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _is_hex_digest(value: object) -> bool:
    return type(value) is str and _HEX_DIGEST.fullmatch(value) is not None


class SignatureError(ValueError):
    """Raised when a message cannot be signed, or is refused for signing (see the message)."""


def option_problem(options: Mapping[str, Any]) -> str | None:
    """What is wrong with a message's options (an option edujobs does not use, or a value of the
    wrong type), or None when they are fine."""
    for name, value in options.items():
        check = OPTION_TYPES.get(name)
        if check is None:
            if name in _DRAMATIQ_OPTIONS:
                return f"option {name!r} is not accepted: edujobs does not use it ({_DRAMATIQ_OPTIONS[name]})"
            return f"option {name!r} is not accepted: edujobs reads only {', '.join(sorted(OPTION_TYPES))}"
        expected = check(value)
        if expected is not None:
            return f"option {name!r} must be {expected}, not {_preview(value)}"
    return None


#: Dramatiq options a sender may try, and why edujobs refuses each.
_DRAMATIQ_OPTIONS = {
    "pipe_target": "pipelines are not supported; enqueue the next job from the actor",
    "pipe_ignore": "pipelines are not supported",
    "on_success": "callbacks are not supported; enqueue the next job from the actor",
    "on_failure": "callbacks are not supported; dead letters say why a job failed",
    "throws": "an actor declares its permanent errors itself",
    "retry_when": "an actor declares its retry policy itself",
    "on_retry_exhausted": "an actor declares it itself",
    "notify_shutdown": "an actor declares it itself",
    "dead_letter": "a dead letter's record is written by the worker that dead-letters it",
    "traceback": "written by the worker for the dead letter",
}


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- canonical JSON -----------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 canonical JSON. Raises ``SignatureError`` for what JSON cannot carry
    exactly (integers past 2^53, lone surrogates, NaN, nesting too deep)."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
        except (orjson.JSONEncodeError, TypeError):
            pass  # an integer past 2^53, a lone surrogate: the library says which
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, RecursionError, TypeError, ValueError) as e:
        raise SignatureError(f"the message cannot be signed: {type(e).__name__}: {e}") from None


def _plain(value: Any) -> bool:
    """Whether orjson's sorted output of ``value`` is RFC 8785's byte for byte: no float anywhere
    (JCS prints numbers as ECMAScript does: ``1`` for 1.0, ``1e+21``...; NaN is not JSON) and no
    object key outside the Basic Multilingual Plane (JCS sorts keys by UTF-16 code units, orjson by
    code points: they differ only there). Strings are written alike by both whatever they hold.
    A walk of a small message costs a couple of microseconds, a regular expression over the output
    three times that."""
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str or (not key.isascii() and max(key) > "\uffff"):
                    return False
            push_all(item.values())
        elif kind is list or kind is tuple:
            push_all(item)
        elif kind is float:
            return False
    return True


# -- documents ----------------------------------------------------------------------------------


def base_queue(queue_name: str) -> str:
    """The queue a message belongs to, without Dramatiq's delay suffix: a delayed message moves
    between ``Q.DQ`` and ``Q`` under one signature."""
    return queue_name[:-3] if queue_name.endswith(".DQ") else queue_name


def sender_document(
    *,
    message_id: str,
    actor_name: str,
    queue_name: str,
    args: Iterable[Any],
    kwargs: Mapping[str, Any],
    message_timestamp: int,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The document ``signature`` covers. An event (options ``event`` and ``event_id``) is covered
    with the actor, queue and message id its publisher wrote (the event's name, ``edujobs.events``
    and the event's id, ``contracts.events``), whichever handler's copy of it this is."""
    envelope = event_envelope(options)
    if envelope is not None:
        actor_name, queue_name, message_id = envelope
    return {
        "actor_name": actor_name,
        "args": list(args),
        "kwargs": kwargs,
        "message_id": message_id,
        "message_timestamp": message_timestamp,
        "options": {
            k: v for k, v in options.items() if k not in STATE_OPTIONS and k not in SIGNATURE_OPTIONS
        },
        "queue_name": base_queue(queue_name),
    }


def state_document(signature: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The document ``state_signature`` covers, or None when the message has no state."""
    state = {k: v for k, v in options.items() if k in STATE_OPTIONS}
    if not state:
        return None
    return {"signature": signature, "state": state}


# -- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    """The signing key, and the other keys accepted when verifying (during a rotation)."""

    key: bytes
    accepted: tuple[bytes, ...] = ()
    _keyed: tuple[hmac.HMAC, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("the signing key must not be empty")
        keys = (self.key, *(k for k in self.accepted if k and k != self.key))
        # An HMAC already keyed, copied per message. Not ``hmac.digest``: its one-shot OpenSSL
        # call releases the GIL, and with the worker's other threads busy, taking it back costs a
        # switch interval (milliseconds), on every message. ``update`` on a small body keeps it.
        object.__setattr__(self, "_keyed", tuple(hmac.new(k, digestmod="sha256") for k in keys))

    @classmethod
    def of(cls, key: bytes | Keyring) -> Keyring:
        return key if isinstance(key, Keyring) else cls(key)

    def sign(self, document: Any) -> str:
        return self._mac(0, canonical_json(document))

    def verify(self, document: Any, given: object) -> bool:
        """Whether ``given`` is the signature of ``document`` under any accepted key."""
        if type(given) is not str:
            return False
        data = canonical_json(document)
        return any(hmac.compare_digest(given, self._mac(i, data)) for i in range(len(self._keyed)))

    def _mac(self, index: int, data: bytes) -> str:
        mac = self._keyed[index].copy()
        mac.update(data)
        return mac.hexdigest()


# -- signing and verifying messages ---------------------------------------------------------------


def sign_message(key: bytes | Keyring, fields: dict[str, Any]) -> None:
    """Sign a new message in place: ``fields`` has Dramatiq's message keys; its options get a
    ``signature`` (and a ``state_signature`` when they hold state). Raises ``SignatureError`` if it
    is signed already or its options are refused."""
    keyring = Keyring.of(key)
    options: dict[str, Any] = fields["options"]
    if SIGNATURE_OPTION in options or STATE_SIGNATURE_OPTION in options:
        raise SignatureError("the message is signed already")
    problem = option_problem(options)
    if problem is not None:
        raise SignatureError(problem)
    signature = keyring.sign(_sender(fields))
    options[SIGNATURE_OPTION] = signature
    _seal_state(keyring, signature, options)


def reseal_state(key: bytes | Keyring, fields: dict[str, Any]) -> None:
    """For the next attempt of a signed message: check its sender signature (the envelope and the
    sender's options are as signed: ``SignatureError`` otherwise), then sign its current state
    again. Never signs a message that was not signed."""
    keyring = Keyring.of(key)
    options: dict[str, Any] = fields["options"]
    problem = option_problem(options)
    if problem is not None:
        raise SignatureError(problem)
    signature = options.get(SIGNATURE_OPTION)
    if not keyring.verify(_sender(fields), signature):
        raise SignatureError("the message's signature does not match it: refusing to sign its state")
    assert isinstance(signature, str)
    _seal_state(keyring, signature, options)


def _seal_state(keyring: Keyring, signature: str, options: dict[str, Any]) -> None:
    state = state_document(signature, options)
    if state is None:
        options.pop(STATE_SIGNATURE_OPTION, None)
    else:
        options[STATE_SIGNATURE_OPTION] = keyring.sign(state)


def verify_message(key: bytes | Keyring, fields: Mapping[str, Any]) -> str | None:
    """What is wrong with a received message's signatures, or None when both check out. Its options
    must have passed ``option_problem`` first."""
    keyring = Keyring.of(key)
    options: Mapping[str, Any] = fields["options"]
    signature = options.get(SIGNATURE_OPTION)
    if signature is None:
        return "the message is not signed"
    try:
        if not keyring.verify(_sender(fields), signature):
            return "the signature does not match the message (tampered, or signed with another key)"
        state = state_document(signature, options)
        given_state = options.get(STATE_SIGNATURE_OPTION)
        if state is None:
            return None if given_state is None else "a state signature without any state"
        if given_state is None:
            return f"its delivery state ({', '.join(sorted(state['state']))}) is not signed"
        if not keyring.verify(state, given_state):
            return "the state signature does not match its delivery state (tampered)"
    except SignatureError as e:
        return str(e)
    return None


def _sender(fields: Mapping[str, Any]) -> dict[str, Any]:
    return sender_document(
        message_id=fields["message_id"],
        actor_name=fields["actor_name"],
        queue_name=fields["queue_name"],
        args=fields["args"],
        kwargs=fields["kwargs"],
        message_timestamp=fields["message_timestamp"],
        options=fields["options"],
    )
