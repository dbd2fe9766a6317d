"""Message signatures: an HMAC over the parts of a message that never change between attempts.

Every enqueue path signs with ``sign_fields`` (the producer client, ``actor.send`` inside workers
through ``middleware.signatures``, requeues), and workers verify with it. It lives here, beside the
contracts and without dramatiq, so that a producer importing ``brokers.client`` loads neither
dramatiq nor any actor. The signed fields are the id, actor name, arguments and timestamp; options
(retry counts, eta, priority) change between attempts and are not signed.
"""

from __future__ import annotations

import functools
import hmac
from typing import Any

import orjson

#: The message option that carries the signature.
SIGNATURE_OPTION = "signature"


def canonical_bytes(
    *, message_id: str, actor_name: str, args: Any, kwargs: Any, message_timestamp: int
) -> bytes:
    """The bytes a signature covers: the immutable fields, in a fixed order, keys sorted."""
    return orjson.dumps(
        [message_id, actor_name, list(args), kwargs, message_timestamp], option=orjson.OPT_SORT_KEYS
    )


def sign_fields(
    key: bytes, *, message_id: str, actor_name: str, args: Any, kwargs: Any, message_timestamp: int
) -> str:
    """Return the hex HMAC-SHA256 of a message's immutable fields."""
    data = canonical_bytes(
        message_id=message_id,
        actor_name=actor_name,
        args=args,
        kwargs=kwargs,
        message_timestamp=message_timestamp,
    )
    mac = _keyed(key).copy()
    mac.update(data)
    return mac.hexdigest()


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    # An HMAC already keyed, copied per message. Not ``hmac.digest``: its one-shot OpenSSL call
    # releases the GIL, and with the worker's other threads busy, taking it back costs a switch
    # interval (milliseconds), on every message. ``update`` on a small body keeps the GIL.
    return hmac.new(key, digestmod="sha256")
