"""The side-effect ledger: an email, SMS, push or posted grade happens once per key and channel.

Delivery is at least once, so an actor with a person-visible side effect claims it first and moves
the claim through owner-checked steps (``store.once.perform_claimed`` does all of it)::

    claim = ledger.claim(key, channel="email", actor_name=..., message_id=...)
    ledger.begin(claim)                       # the request may leave from now on
    provider_id = send(...)                   # a failure before this line: ledger.release(claim)
    ledger.complete(claim, provider_message_id=provider_id)

**Keys per channel.** A row is keyed by ``(idempotency_key, channel)``: an email and an SMS sent
under the same key are two side effects.

**Owner-checked transitions.** A claim carries a token (``claim_token``) and names the worker
process holding it (``owner_id``, beating a heartbeat: ``store.owners``). ``begin``, ``complete``,
``release`` and ``unclaim`` change the row only while it still carries the claim's token: an
attempt whose claim was judged and taken over by another can neither send (``begin`` raises
``ClaimLostError``) nor overwrite what the other recorded.

**Database time.** ``claimed_at``, ``sending_at``, ``completed_at`` and the owners' beats are the
database's ``now``, and claims are judged by ages the database computes (``store.clock``): no
worker's clock decides whether a claim is old.

**Judging a pending claim** (another attempt met it):

- its owner beats and the claim is younger than ``lease_seconds``: it is being worked on; the
  caller waits (``Claim.retry_after``: until its owner would look dead, or its lease runs out);
- its owner stopped beating for ``owner_timeout`` seconds, said it stopped, or the lease ran out
  (a thread hung in a call): the claim is judged now, by its phase:

  - ``sending_at`` unset: the request provably never left; the claim is taken over and the side
    effect performed at once;
  - ``sending_at`` set: the request may have reached the provider: an **unknown outcome**. With
    ``resend_unknown`` (the caller's policy: critical and high priority notifications) it is taken
    over and performed again, knowingly risking a duplicate; otherwise it is *held*: the row
    becomes ``unknown``, nothing is sent, and an operator decides (``store.deliveries``).

A claim from before owners existed (no ``owner_id``) is judged only once its lease has run out,
and its phase being unknown, as an unknown outcome.

``failed`` and ``skipped`` rows do not count as done: a claim takes them over. ``record`` writes a
finished row directly (``skipped`` with the reason for a channel a notification did not use).
Every statement is atomic on its own and runs in autocommit: one round trip each. The first claim
of a key inserts its row (INSERT ... ON CONFLICT DO NOTHING); a take-over is a conditional UPDATE
that one contender wins. ``claim_and_read`` claims and reads one other row (the recipient) in one
PostgreSQL statement, the claim's insert being a CTE of the read.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, Table, select
from sqlalchemy.orm import Session

from contracts.errors import InProgressError
from store.db import autocommit
from store.ledger_sql import (
    FAILED,
    FOUND,
    INSERTED,
    KEY,
    PENDING,
    RELAXED,
    SENT,
    SKIPPED,
    UNKNOWN,
    claim_and_read,
    statements,
)
from store.models import Delivery
from store.owners import Owner
from store.types import utcnow
from store.upsert import upsert

__all__ = [
    "FAILED",
    "PENDING",
    "RETAKEABLE",
    "SENT",
    "SKIPPED",
    "UNKNOWN",
    "Claim",
    "ClaimLostError",
    "Ledger",
]

logger = logging.getLogger(__name__)

#: Rows that do not count as done: a claim may take them over, ``record`` may overwrite them.
RETAKEABLE = (FAILED, SKIPPED)
MAX_ERROR_CHARS = 4000

_deliveries: Table = Delivery.__table__  # type: ignore[assignment]
_c = _deliveries.c


class ClaimLostError(InProgressError):
    """Raised when a claim was judged and taken over by another attempt before this one acted on
    it: this attempt must not perform the side effect (the other one does, or has)."""


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: ``acquired`` means go ahead and perform the side effect.

    When not acquired, ``status`` says why: ``pending`` (another attempt holds it now: wait
    ``retry_after`` seconds), ``unknown`` (held: it may have happened, an operator decides), or
    the finished status (``sent``) with the provider's message id of that earlier delivery.
    ``judged`` says what this claim decided about an earlier one: ``recovered`` (taken over from a
    dead worker before its request left), ``resent`` (taken over after it may have left) or
    ``held`` (made ``unknown``).
    """

    acquired: bool
    status: str
    provider_message_id: str | None = None
    key: str = field(default="", compare=False)
    channel: str = field(default="", compare=False)
    token: str | None = field(default=None, compare=False)
    #: This claim inserted a new row (``unclaim`` removes it).
    inserted: bool = field(default=False, compare=False)
    retry_after: float | None = field(default=None, compare=False)
    judged: str | None = field(default=None, compare=False)


def _new_row(
    key: str, channel: str, actor_name: str, message_id: str, user_id: int | None, **rest: Any
) -> dict[str, Any]:
    return {"idempotency_key": key, "channel": channel, "actor_name": actor_name,
            "message_id": message_id, "user_id": user_id, **rest}  # fmt: skip


class Ledger:
    """Claims side effects in the ``deliveries`` table and moves them to done, owner-checked."""

    def __init__(self, engine: Engine, *, lease_seconds: float = 600, owner_timeout: float = 20) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.owner_timeout = owner_timeout
        #: The same pool, each statement committed on its own (see the module docstring).
        self._autocommit = autocommit(engine)
        self._sql = statements(engine.dialect.name)
        self._owner: Owner | None = None
        self._owner_lock = threading.Lock()

    @property
    def owner(self) -> Owner:
        """This process as the holder of claims, registered (and beating) on first use."""
        owner = self._owner
        if owner is None or owner.pid != os.getpid() or owner.stopped:
            with self._owner_lock:
                owner = self._owner
                if owner is None or owner.pid != os.getpid() or owner.stopped:
                    owner = self._owner = Owner(self.engine, timeout=self.owner_timeout)
        return owner

    def close(self) -> None:
        """Stop this process's heartbeat and say it stopped: its pending claims are judged at once."""
        if self._owner is not None:
            self._owner.stop()

    def claim(
        self,
        key: str,
        *,
        channel: str,
        actor_name: str,
        message_id: str,
        user_id: int | None = None,
        resend_unknown: bool = False,
    ) -> Claim:
        """Take the right to perform the side effect ``(key, channel)``, unless it is done, being
        done, or held as an unknown outcome; see the module docstring for how a pending claim is
        judged, and ``resend_unknown``."""
        values = self._claim_row(key, channel, actor_name, message_id, user_id)
        token = values["claim_token"]
        with self._autocommit.connect() as connection:
            for _ in range(3):
                if connection.execute(self._sql.insert, values).first() is not None:
                    return Claim(True, PENDING, key=key, channel=channel, token=token, inserted=True)
                claim = self._judge(connection, values, resend_unknown)
                if claim is not None:
                    return claim
                # The row changed under us (removed, or another attempt acted first): look again.
        return Claim(False, PENDING, key=key, channel=channel, retry_after=1.0)

    def claim_and_read(
        self,
        key: str,
        *,
        channel: str,
        actor_name: str,
        message_id: str,
        user_id: int | None = None,
        read: Select[Any],
        parameters: dict[str, Any],
        resend_unknown: bool = False,
    ) -> tuple[Claim, dict[str, Any] | None]:
        """``claim`` the side effect, and run ``read`` (a select of at most one row, with
        ``parameters``): the claim, and the row read as a dict (None if there was none). On
        PostgreSQL both are one statement when the key is new, the common case; a key already in
        the ledger, and SQLite, go through ``claim`` after the read. Check what was read before
        acting on the claim, and ``unclaim`` it if a check fails."""
        if self.engine.dialect.name == "postgresql":
            values = self._claim_row(key, channel, actor_name, message_id, user_id)
            token = values["claim_token"]
            bound = {**parameters, **{f"claim_{name}": value for name, value in values.items()}}
            with self._autocommit.connect() as connection:
                row = dict(connection.execute(claim_and_read(read, tuple(values)), bound).one()._mapping)
            inserted, found, _ = row.pop(INSERTED), row.pop(FOUND), row.pop(RELAXED)
            read_row = row if found is not None else None
            if inserted:
                return Claim(True, PENDING, key=key, channel=channel, token=token, inserted=True), read_row
        else:
            with self._autocommit.connect() as connection:
                first = connection.execute(read, parameters).first()
            read_row = dict(first._mapping) if first is not None else None
        claim = self.claim(key, channel=channel, actor_name=actor_name, message_id=message_id,
                           user_id=user_id, resend_unknown=resend_unknown)  # fmt: skip
        return claim, read_row

    def begin(self, claim: Claim) -> None:
        """Mark that the claim's request may leave from now on (before sending it). Raise
        ``ClaimLostError`` if the claim is no longer this attempt's: then it must not send."""
        if self._run(self._sql.begin, claim) == 0:
            raise ClaimLostError(f"{claim.channel} delivery {claim.key} was taken over by another attempt")

    def complete(self, claim: Claim, *, provider_message_id: str | None, status: str = SENT) -> bool:
        """Record that the side effect happened. False (logged) if the claim was taken over in the
        meantime: the other attempt may have performed it too."""
        if status in (PENDING, FAILED, UNKNOWN):
            raise ValueError(f"complete() records a finished delivery, not {status!r}")
        if self._run(self._sql.complete, claim, b_status=status, b_provider_id=provider_message_id):
            return True
        logger.error("Delivery %s (%s) was performed, but its claim had been taken over by another "
                     "attempt: it may have happened twice.", claim.key, claim.channel)  # fmt: skip
        return False

    def release(self, claim: Claim, *, error: str) -> None:
        """Record that the attempt failed without the side effect: a retry may claim it again."""
        if not self._run(self._sql.finish, claim, b_status=FAILED, b_error=error[:MAX_ERROR_CHARS]):
            logger.warning("Delivery %s (%s) was not this attempt's any more; release ignored.",
                           claim.key, claim.channel)  # fmt: skip

    def hold(self, claim: Claim, *, error: str) -> bool:
        """Record that the side effect may or may not have happened, and is not to be repeated
        unless an operator says so (status ``unknown``). False if the claim was not this attempt's."""
        return bool(self._run(self._sql.finish, claim, b_status=UNKNOWN, b_error=error[:MAX_ERROR_CHARS]))

    def unclaim(self, claim: Claim, *, error: str) -> None:
        """Give back an acquired ``claim`` whose side effect was not attempted (``begin`` was not
        called): a row the claim inserted is removed, as if never claimed; a row it took over is
        released with ``error``."""
        if not claim.acquired:
            return
        if not claim.inserted:
            self.release(claim, error=error)
            return
        self._run(self._sql.remove, claim)

    def record(
        self,
        key: str,
        *,
        status: str,
        channel: str,
        actor_name: str,
        message_id: str,
        user_id: int | None = None,
        provider_message_id: str | None = None,
        error: str | None = None,
        replaces: tuple[str, ...] = (SKIPPED,),
    ) -> bool:
        """Write a finished row for ``(key, channel)`` without a claim (``skipped``, or a ``sent``
        summary of several side effects). An existing row is overwritten only if its status is in
        ``replaces``: a ``pending`` or ``sent`` row is never touched. True if a row was written."""
        if status == PENDING:
            raise ValueError("record() writes finished rows; claim() a pending one")
        now = utcnow()
        done = {
            "status": status,
            "provider_message_id": provider_message_id,
            "completed_at": now,
            "error": error[:MAX_ERROR_CHARS] if error else None,
        }
        values = _new_row(key, channel, actor_name, message_id, user_id, claimed_at=now, attempts=0, **done)
        with self._autocommit.connect() as connection:
            return upsert(connection, _deliveries, values, keys=list(KEY), update=done,
                          where=_c.status.in_(replaces))  # fmt: skip

    def get(self, key: str, channel: str) -> Delivery | None:
        """The ledger entry of ``(key, channel)``, detached from any session."""
        statement = select(Delivery).where(Delivery.idempotency_key == key, Delivery.channel == channel)
        with Session(self._autocommit, expire_on_commit=False) as session:
            return session.scalars(statement).one_or_none()

    def _claim_row(
        self, key: str, channel: str, actor_name: str, message_id: str, user_id: int | None
    ) -> dict[str, Any]:
        """A new claim's row: a fresh token, held by this process."""
        return _new_row(key, channel, actor_name, message_id, user_id, claim_token=uuid.uuid4().hex,
                        owner_id=self.owner.id)  # fmt: skip

    def _run(self, statement: Any, claim: Claim, **parameters: Any) -> int:
        bound = {"b_key": claim.key, "b_channel": claim.channel, "b_token": claim.token, **parameters}
        with self._autocommit.connect() as connection:
            return int(connection.execute(statement, bound).rowcount)

    def _judge(self, connection: Connection, values: dict[str, Any], resend_unknown: bool) -> Claim | None:
        """Answer a claim whose row exists, taking it over or holding it when it is judged; None
        when the row changed meanwhile (the caller tries again)."""
        key, channel = values["idempotency_key"], values["channel"]
        row = connection.execute(self._sql.judge, {"b_key": key, "b_channel": channel}).one_or_none()
        if row is None:
            return None  # removed between the insert and the read (unclaimed, cleaned up)
        verdict, why, wait = self._verdict(row, resend_unknown)
        if verdict == "answer":
            return Claim(False, row.status, row.provider_message_id, key=key, channel=channel)
        if verdict == "wait":
            return Claim(False, PENDING, key=key, channel=channel, retry_after=wait)
        unchanged = {"b_key": key, "b_channel": channel, "b_status": row.status,
                     "b_attempts": row.attempts, "b_old_token": row.claim_token}  # fmt: skip
        if verdict == "hold":
            if connection.execute(self._sql.hold, {**unchanged, "b_error": why}).rowcount != 1:
                return None
            logger.warning("Delivery %s (%s) held as an unknown outcome: %s.", key, channel, why)
            return Claim(False, UNKNOWN, key=key, channel=channel, judged="held")
        taken = connection.execute(
            self._sql.take_over,
            {
                **unchanged,
                "b_actor": values["actor_name"],
                "b_message": values["message_id"],
                "b_token": values["claim_token"],
                "b_owner": values["owner_id"],
            },
        )
        if taken.rowcount != 1:
            return None
        judged = (
            None
            if row.status != PENDING
            else "resent"
            if row.sending or row.owner_id is None
            else "recovered"
        )
        log = logger.warning if judged == "resent" else logger.info
        log(
            "Delivery %s (%s) taken over (attempt %d)%s.",
            key,
            channel,
            row.attempts + 1,
            f": {why}" if why else "",
        )
        return Claim(True, PENDING, key=key, channel=channel, token=values["claim_token"], judged=judged)

    def _verdict(self, row: Row[Any], resend_unknown: bool) -> tuple[str, str | None, float | None]:
        """("answer" | "take" | "hold" | "wait", why, seconds to wait) for a claim meeting ``row``."""
        if row.status in RETAKEABLE:
            return "take", None, None
        if row.status != PENDING:
            return "answer", None, None
        legacy = row.owner_id is None  # claimed before owners existed: neither owner nor phase known
        claim_age = float(row.claim_age or 0.0)
        beat_age = None if row.beat_age is None else float(row.beat_age)
        alive = (
            not legacy and beat_age is not None and beat_age < self.owner_timeout and not row.owner_stopped
        )
        expired = claim_age >= self.lease_seconds
        if not expired and (alive or legacy):
            waits = [self.lease_seconds - claim_age]
            if alive and beat_age is not None:
                waits.append(self.owner_timeout - beat_age)
            return "wait", None, max(1.0, min(waits) + 1.0)
        why = "its lease ran out" if expired and (alive or legacy) else "its worker stopped"
        if not legacy and not row.sending:
            return "take", f"{why} before its request left", None
        if resend_unknown:
            return "take", f"{why} after its request may have left; performed again (resend policy)", None
        return "hold", f"unknown outcome: {why} after its request may have left", None
