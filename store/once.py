"""Side effects that happen once: run an action at most once per idempotency key.

Any actor whose work a person notices (an email, an SMS, a push, a posted grade) wraps it::

    outcome = perform_once(ledger, key, channel="email", actor_name=..., message_id=..., action=send)

- key already done: the action is not run, the earlier provider id is returned (``duplicate``);
- key being performed by another attempt now: ``InProgressError`` (transient: retried later);
- the action raises an ``EdujobsError``: the claim is released (a retry or requeue may try again),
  except for ``OutcomeUnknownError`` (below);
- anything else interrupts it (time limit, shutdown, crash): whether the provider acted is unknown,
  so the claim is left to expire after the ledger's lease (at most one duplicate, after the lease).

``OutcomeUnknownError`` is a transient error for which the provider may have acted: the request
went out and no answer came back in time (a read timeout). Releasing the claim would let the retry
send a second copy at once whenever the provider had in fact accepted; so the claim is kept, and
retries meet ``InProgressError`` until the lease expires. The trade-off: a message the provider
really did not receive goes out up to one lease late (10 minutes by default) instead of at the next
retry, and is still sent twice if the provider had accepted it and the lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from contracts.errors import EdujobsError, InProgressError, ProviderUnavailableError
from store.ledger import Claim, Ledger

logger = logging.getLogger(__name__)


class OutcomeUnknownError(ProviderUnavailableError):
    """Raised by a provider adapter when a request was sent but no answer came: the side effect may
    have happened. Retried like any ``ProviderUnavailableError``, but the ledger claim is kept."""


@dataclass(frozen=True)
class Outcome:
    status: str  # "done" (the action ran now) or "duplicate" (it had run before)
    provider_message_id: str | None


def perform_once(
    ledger: Ledger,
    key: str,
    *,
    channel: str,
    actor_name: str,
    message_id: str,
    action: Callable[[], str | None],
    user_id: int | None = None,
) -> Outcome:
    """Run ``action`` (which returns the provider's id, if any) unless ``key`` was done already."""
    claim = ledger.claim(key, channel=channel, actor_name=actor_name, message_id=message_id, user_id=user_id)
    return perform_claimed(ledger, key, claim, channel=channel, action=action)


def perform_claimed(
    ledger: Ledger, key: str, claim: Claim, *, channel: str, action: Callable[[], str | None]
) -> Outcome:
    """``perform_once`` after its claim: for a caller that claimed ``key`` itself (with
    ``Ledger.claim_and_read``, say)."""
    if not claim.acquired:
        if claim.status == "pending":
            raise InProgressError(f"{channel} delivery {key} is being performed by another attempt")
        logger.info("Side effect %s already done (%s); not repeated.", key, claim.status)
        return Outcome("duplicate", claim.provider_message_id)
    try:
        provider_id = action()
    except OutcomeUnknownError:
        logger.warning("Side effect %s may have happened (%s); its claim is kept until the lease expires.",
                       key, "no answer from the provider")  # fmt: skip
        raise
    except EdujobsError as e:
        ledger.release(key, error=f"{type(e).__name__}: {e}")
        raise
    except BaseException as e:
        logger.warning(
            "Side effect %s interrupted by %s; its claim expires after the lease.", key, type(e).__name__
        )
        raise
    ledger.complete(key, provider_message_id=provider_id)
    return Outcome("done", provider_id)
