"""Side effects that happen once: what edujobs guarantees per idempotency key, and what it does not.

Any actor whose work a person notices (an email, an SMS, a push, a posted grade) wraps it::

    outcome = perform_once(ledger, key, channel="email", actor_name=..., message_id=..., action=send,
                           resend_unknown=<critical or high priority>)

**What is guaranteed.** For one ``(key, channel)``:

- once ``sent`` is recorded, the action never runs again (``duplicate``), whatever the redeliveries;
- two attempts never run the action at the same time: the second waits (``InProgressError``,
  which does not spend a retry, with ``retry_after`` set to when the first can be judged);
- an attempt whose action failed *before its request left* (refused connection, 4xx, 500/503, an
  open breaker, a time limit before the call) gives the claim back: the retry performs it;
- an attempt whose worker died is judged within ``owner_timeout`` (20 s by default) of its last
  heartbeat, not after a fixed lease: if its request had not left, the retry performs it at once;
- an action whose request *may* have reached the provider and got no clear answer (connection
  reset or closed before the answer, read timeout, a gateway's 502/504, an interruption or a worker
  death mid-call) is an **unknown outcome**, handled by one stated policy:

  - ``resend_unknown=False`` (normal, low, bulk priority; the default): **held**: never performed
    again automatically; the row is ``unknown``, the outcome ``unknown``, the message acked; counted
    in ``edujobs_side_effects_unknown_total{resolution="held"}`` and listed by
    ``edujobs deliveries --unknown`` for an operator to resolve (README: Side effects);
  - ``resend_unknown=True`` (critical and high): performed again at once, accepting that the
    person may get it twice (``resolution="resent"``, logged at WARNING).

**What is not.** "Exactly once" with the provider: a held unknown outcome may be a message the
provider never got (lost until an operator resends it), a resent one may be a duplicate. A thread
hung inside a call past ``lease_seconds`` (10 minutes) is judged like a dead worker.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from contracts.errors import EdujobsError, InProgressError, ProviderUnavailableError
from store.ledger import PENDING, UNKNOWN, Claim, ClaimLostError, Ledger

logger = logging.getLogger(__name__)


class OutcomeUnknownError(ProviderUnavailableError):
    """Raised by a provider adapter when the request may have reached the provider but no clear
    answer came back: the side effect may have happened. ``perform_claimed`` applies the policy."""


@dataclass(frozen=True)
class Outcome:
    #: "done" (the action ran now), "duplicate" (it had run before) or "unknown" (it may have run:
    #: held for an operator, not repeated).
    status: str
    provider_message_id: str | None


class _Leaving:
    """Marks the claim ``sending`` (``Ledger.begin``) once, when its request is about to leave."""

    def __init__(self, ledger: Ledger, claim: Claim) -> None:
        self.ledger, self.claim, self.done = ledger, claim, False

    def __call__(self) -> None:
        if not self.done:
            self.ledger.begin(self.claim)  # ClaimLostError: taken over, nothing may leave
            self.done = True


_leaving: ContextVar[_Leaving | None] = ContextVar("edujobs_request_leaving", default=None)


def request_leaving() -> None:
    """Say that the side effect's request is about to leave: a provider adapter calls this inside
    its breaker guard, right before it writes the request, so that a worker killed before that
    point left a claim that provably never left (performed again at once), and one killed after
    it, an unknown outcome. Outside ``perform_claimed`` it does nothing."""
    leaving = _leaving.get()
    if leaving is not None:
        leaving()


@functools.cache
def _unknown_outcomes() -> Counter:
    # Created on first use, in the worker process: it then lives in the pool's multiprocess files
    # (middleware.metrics) and the pool's /metrics endpoint sums it with the other processes'.
    return Counter(
        "edujobs_side_effects_unknown",
        "Side effects whose request may have reached the provider without a clear answer: held "
        "(not repeated, for an operator) or resent (critical and high priority).",
        ["channel", "resolution"],
        registry=CollectorRegistry(),
    )


def count_unknown(channel: str, resolution: str) -> None:
    _unknown_outcomes().labels(channel, resolution).inc()


def perform_once(
    ledger: Ledger,
    key: str,
    *,
    channel: str,
    actor_name: str,
    message_id: str,
    action: Callable[[], str | None],
    user_id: int | None = None,
    resend_unknown: bool = False,
    prepare: Callable[[], object] | None = None,
    marks_leaving: bool = False,
) -> Outcome:
    """Run ``action`` (which returns the provider's id, if any) unless ``(key, channel)`` was done
    already. ``prepare`` runs once the claim is this attempt's, before the request may leave (a
    rate limiter's wait): a failure there gives the claim back. ``marks_leaving``: see
    ``perform_claimed``."""
    claim = ledger.claim(key, channel=channel, actor_name=actor_name, message_id=message_id,
                         user_id=user_id, resend_unknown=resend_unknown)  # fmt: skip
    if claim.acquired and prepare is not None:
        try:
            prepare()
        except BaseException as e:
            give_back(ledger, claim, e)
            raise
    return perform_claimed(
        ledger, claim, action=action, resend_unknown=resend_unknown, marks_leaving=marks_leaving
    )


def perform_claimed(
    ledger: Ledger,
    claim: Claim,
    *,
    action: Callable[[], str | None],
    resend_unknown: bool = False,
    marks_leaving: bool = False,
) -> Outcome:
    """``perform_once`` after its claim: for a caller that claimed the key itself (with
    ``Ledger.claim_and_read``, say).

    The claim is marked ``sending`` before ``action`` runs, unless ``marks_leaving``: the action
    (a provider adapter) then calls ``request_leaving`` itself right before its request leaves,
    after its breaker guard and its own preparations, which makes the window in which a crash
    leaves an unknown outcome as small as it can be."""
    if claim.judged in ("held", "resent"):
        count_unknown(claim.channel, claim.judged)
    if not claim.acquired:
        if claim.status == PENDING:
            raise InProgressError(
                f"{claim.channel} delivery {claim.key} is being performed by another attempt",
                retry_after=claim.retry_after,
            )
        if claim.status == UNKNOWN:
            logger.warning(
                "Side effect %s (%s) has an unknown outcome; not repeated.", claim.key, claim.channel
            )
            return Outcome("unknown", None)
        logger.info(
            "Side effect %s (%s) already done (%s); not repeated.", claim.key, claim.channel, claim.status
        )
        return Outcome("duplicate", claim.provider_message_id)
    leaving = _Leaving(ledger, claim)
    if not marks_leaving:
        leaving()  # from here on, the request may leave
    context = _leaving.set(leaving)
    try:
        provider_id = action()
    except OutcomeUnknownError as e:
        if _unknown(ledger, claim, e, resend_unknown) == "held":
            return Outcome("unknown", None)
        raise
    except ClaimLostError:
        raise  # taken over by another attempt before the request left: nothing of ours to record
    except EdujobsError as e:
        ledger.release(claim, error=f"{type(e).__name__}: {e}")
        raise
    except BaseException as e:
        # A time limit or shutdown landed mid-call: did the provider act? This thread is still here
        # to apply the policy (or, if the request had not left yet, to give the claim back), so
        # nobody has to wait for the claim to be judged.
        try:
            if leaving.done:
                _unknown(ledger, claim, e, resend_unknown)
            else:
                ledger.release(claim, error=f"{type(e).__name__}: {e}")
        except Exception:
            logger.exception("Could not record the outcome of %s; it is judged later.", claim.key)
        raise
    finally:
        _leaving.reset(context)
    ledger.complete(claim, provider_message_id=provider_id)
    return Outcome("done", provider_id)


def _unknown(ledger: Ledger, claim: Claim, error: BaseException, resend: bool) -> str:
    """Apply the unknown-outcome policy to an acquired ``claim``: "held" or "resent"."""
    reason = f"unknown outcome: {type(error).__name__}: {error}"
    if resend:
        # Given back: the retry performs it again (the message's priority asks for it).
        ledger.release(claim, error=reason)
        logger.warning("Side effect %s (%s) may have happened (%s); it is performed again (resend "
                       "policy).", claim.key, claim.channel, type(error).__name__)  # fmt: skip
        count_unknown(claim.channel, "resent")
        return "resent"
    if ledger.hold(claim, error=reason):
        logger.warning("Side effect %s (%s) may have happened (%s); held as unknown, not repeated.",
                       claim.key, claim.channel, type(error).__name__)  # fmt: skip
        count_unknown(claim.channel, "held")
    return "held"


def give_back(ledger: Ledger, claim: Claim, error: BaseException) -> None:
    """``Ledger.unclaim``, while ``error`` (what stopped the attempt before its request could
    leave) propagates: a failure to give the claim back is logged, not raised over it (the claim
    is then judged once this worker stops, or after the lease)."""
    try:
        ledger.unclaim(claim, error=f"{type(error).__name__}: {error}")
    except Exception:
        logger.exception("Could not give back the claim of %s; it is judged later.", claim.key)
