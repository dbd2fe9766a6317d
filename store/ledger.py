"""The side-effect ledger: an email, SMS, push or posted grade happens once per idempotency key.

Delivery is at least once, so an actor with a person-visible side effect claims its key first::

    claim = ledger.claim(key, channel="email", actor_name=..., message_id=...)
    if not claim.acquired:
        if claim.status == "pending":
            raise SomeTransientError(...)   # another attempt is sending right now: retry later
        return                              # already sent: do nothing
    try:
        provider_id = send(...)
    except ProviderError as e:
        ledger.release(key, error=str(e))   # nothing was sent: a retry may claim it again
        raise
    ledger.complete(key, provider_message_id=provider_id)

Besides claims, ``record`` writes a finished row directly: ``skipped`` for a channel a notification
did not use (not configured, no address, breaker open), with the reason, so an operator sees why
the next channel was used; a skipped row does not count as done (a later attempt may claim it).

A claim is a lease: a ``pending`` row older than ``lease_seconds`` (its worker died mid-send) may
be taken over. Claims are race-safe across processes: the first insert wins through the unique
key (INSERT ... ON CONFLICT DO NOTHING), and a take-over is a conditional UPDATE that only one
contender can win (it checks the status and attempt count it read).

Each of those statements is atomic on its own, so the ledger runs them in autocommit: one round
trip each, instead of a BEGIN, the statement and a COMMIT. A notification makes two of them.

``claim_and_read`` claims and reads one other row (the recipient) together: on PostgreSQL in one
statement, the claim's insert a CTE of the read, so an email costs two round trips, not three. The
caller checks what it read after the claim; when a check fails, ``unclaim`` removes the row the
claim inserted, leaving the ledger as it was (nothing was attempted).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from store.db import autocommit
from store.models import Delivery
from store.types import utcnow
from store.upsert import insert_if_absent, upsert

logger = logging.getLogger(__name__)

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
#: Rows that do not count as done: a claim may take them over, ``record`` may overwrite them.
RETAKEABLE = (FAILED, SKIPPED)
MAX_ERROR_CHARS = 4000

_deliveries: Table = Delivery.__table__  # type: ignore[assignment]

#: ``complete``'s statement, built once: every delivery runs it.
_COMPLETE = (
    update(_deliveries)
    .where(_deliveries.c.idempotency_key == bindparam("b_key"))
    .values(
        status=bindparam("b_status"),
        provider_message_id=bindparam("b_provider_id"),
        completed_at=bindparam("b_now"),
        error=None,
    )
)


_INSERTED = "claim_inserted_"
_FOUND = "claim_read_found_"


@functools.lru_cache(maxsize=16)
def _claim_and_read(read: Select[Any], columns: tuple[str, ...]) -> Select[Any]:
    """PostgreSQL: ``WITH claim AS (INSERT ... ON CONFLICT DO NOTHING RETURNING ...) SELECT (SELECT
    count(*) FROM claim), r.* FROM (SELECT 1) LEFT JOIN (read) r ON true``: one row whatever the
    read finds, saying whether the claim inserted its row, and the read's row (its marker column
    is NULL when it found none). The claim's ``columns`` are bound as ``claim_<column>``."""
    claim = (
        postgresql.insert(_deliveries)
        .values({name: bindparam(f"claim_{name}") for name in columns})
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_deliveries.c.idempotency_key)
        .cte("claim")
    )
    inserted = select(func.count()).select_from(claim).scalar_subquery().label(_INSERTED)
    found = read.add_columns(literal(1).label(_FOUND)).subquery("r")
    one = select(literal(1).label("one")).subquery("one")
    return select(inserted, *found.c).select_from(one.outerjoin(found, true()))


@dataclass(frozen=True)
class Claim:
    """The answer to a claim: ``acquired`` means go ahead and perform the side effect.

    When not acquired, ``status`` says why: ``pending`` (another attempt holds it now) or the
    finished status (``sent``), with the provider's message id of that earlier delivery.
    """

    acquired: bool
    status: str
    provider_message_id: str | None = None
    #: When this claim inserted a new row: its ``claimed_at`` (``unclaim`` removes that row).
    inserted_at: datetime | None = field(default=None, compare=False)


def _new_row(
    key: str, channel: str, actor_name: str, message_id: str, user_id: int | None, now: datetime, **rest: Any
) -> dict[str, Any]:
    return {"idempotency_key": key, "channel": channel, "actor_name": actor_name,
            "message_id": message_id, "user_id": user_id, "claimed_at": now, **rest}  # fmt: skip


class Ledger:
    """Claims, completes and releases deliveries in the ``deliveries`` table."""

    def __init__(self, engine: Engine, *, lease_seconds: float = 600) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        #: The same pool, each statement committed on its own (see the module docstring).
        self._autocommit = autocommit(engine)

    def claim(
        self, key: str, *, channel: str, actor_name: str, message_id: str, user_id: int | None = None
    ) -> Claim:
        """Take the right to perform the side effect ``key``, unless it is done or being done."""
        now = utcnow()
        values = _new_row(key, channel, actor_name, message_id, user_id, now, status=PENDING, attempts=1)
        with self._autocommit.connect() as connection:
            for _ in range(3):
                if insert_if_absent(connection, _deliveries, values, keys=["idempotency_key"]):
                    return Claim(True, PENDING, inserted_at=now)
                row = self._read(connection, key)
                if row is None:  # removed between the insert and the read (cleanup): insert again
                    continue
                if not self._may_take_over(row.status, row.claimed_at, now):
                    return Claim(False, row.status, row.provider_message_id)
                if self._take_over(connection, key, row, now, actor_name=actor_name, message_id=message_id):
                    logger.info("Delivery %s taken over (attempt %d).", key, row.attempts + 1)
                    return Claim(True, PENDING)
                # Another attempt took it over first: read again to answer with its status.
            row = self._read(connection, key)
        return Claim(False, row.status if row else PENDING, row.provider_message_id if row else None)

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
    ) -> tuple[Claim, dict[str, Any] | None]:
        """``claim`` ``key``, and run ``read`` (a select of at most one row, with ``parameters``):
        the claim, and the row read as a dict (None if there was none). On PostgreSQL both are one
        statement when the key is new, the common case; a key already in the ledger, and SQLite,
        go through ``claim`` after the read. Check what was read before acting on the claim, and
        ``unclaim`` it if a check fails."""
        if self.engine.dialect.name == "postgresql":
            now = utcnow()
            values = _new_row(key, channel, actor_name, message_id, user_id, now, status=PENDING, attempts=1)
            bound = {**parameters, **{f"claim_{name}": value for name, value in values.items()}}
            with self._autocommit.connect() as connection:
                row = dict(connection.execute(_claim_and_read(read, tuple(values)), bound).one()._mapping)
            inserted, found = row.pop(_INSERTED), row.pop(_FOUND)
            read_row = row if found is not None else None
            if inserted:
                return Claim(True, PENDING, inserted_at=now), read_row
        else:
            with self._autocommit.connect() as connection:
                first = connection.execute(read, parameters).first()
            read_row = dict(first._mapping) if first is not None else None
        claim = self.claim(
            key, channel=channel, actor_name=actor_name, message_id=message_id, user_id=user_id
        )
        return claim, read_row

    def unclaim(self, key: str, claim: Claim, *, error: str) -> None:
        """Give back an acquired ``claim`` whose side effect was not attempted: a row the claim
        inserted is removed, as if never claimed; a row it took over is released with ``error``."""
        if not claim.acquired:
            return
        if claim.inserted_at is None:
            self.release(key, error=error)
            return
        c = _deliveries.c
        statement = delete(_deliveries).where(
            c.idempotency_key == key, c.status == PENDING, c.claimed_at == claim.inserted_at
        )
        with self._autocommit.connect() as connection:
            connection.execute(statement)

    def complete(self, key: str, *, provider_message_id: str | None, status: str = SENT) -> None:
        """Record that the side effect happened (``status`` other than ``failed`` counts as done)."""
        if status in (PENDING, FAILED):
            raise ValueError(f"complete() records a finished delivery, not {status!r}: use release()")
        parameters = {
            "b_key": key,
            "b_status": status,
            "b_provider_id": provider_message_id,
            "b_now": utcnow(),
        }
        with self._autocommit.connect() as connection:
            if connection.execute(_COMPLETE, parameters).rowcount == 0:
                raise LookupError(f"no delivery {key!r} in the ledger: claim it first")

    def release(self, key: str, *, error: str) -> None:
        """Record that the attempt failed without the side effect: a retry may claim it again."""
        statement = (
            update(_deliveries)
            .where(_deliveries.c.idempotency_key == key, _deliveries.c.status == PENDING)
            .values(status=FAILED, error=error[:MAX_ERROR_CHARS], completed_at=utcnow())
        )
        with self._autocommit.connect() as connection:
            if connection.execute(statement).rowcount == 0:
                logger.warning("Delivery %s was not pending; release ignored.", key)

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
        """Write a finished row for ``key`` without a claim (``skipped``, or a ``sent`` summary of
        several side effects). An existing row is overwritten only if its status is in
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
        values = _new_row(key, channel, actor_name, message_id, user_id, now, attempts=0, **done)
        with self._autocommit.connect() as connection:
            return upsert(
                connection,
                _deliveries,
                values,
                keys=["idempotency_key"],
                update=done,
                where=_deliveries.c.status.in_(replaces),
            )

    def get(self, key: str) -> Delivery | None:
        """The ledger entry of ``key``, detached from any session."""
        with Session(self._autocommit, expire_on_commit=False) as session:
            return session.scalars(select(Delivery).where(Delivery.idempotency_key == key)).one_or_none()

    def _may_take_over(self, status: str, claimed_at: datetime, now: datetime) -> bool:
        if status in RETAKEABLE:
            return True
        return status == PENDING and now - claimed_at >= self.lease

    @staticmethod
    def _read(connection: Connection, key: str) -> Row[str, datetime, int, str | None] | None:
        c = _deliveries.c
        statement = select(c.status, c.claimed_at, c.attempts, c.provider_message_id).where(
            c.idempotency_key == key
        )
        return connection.execute(statement).one_or_none()

    @staticmethod
    def _take_over(
        connection: Connection,
        key: str,
        row: Row[str, datetime, int, str | None],
        now: datetime,
        *,
        actor_name: str,
        message_id: str,
    ) -> bool:
        c = _deliveries.c
        statement = (
            update(_deliveries)
            # Only if nobody changed the row since it was read: one contender wins.
            .where(c.idempotency_key == key, c.status == row.status, c.attempts == row.attempts)
            .values(
                status=PENDING,
                claimed_at=now,
                attempts=c.attempts + 1,
                actor_name=actor_name,
                message_id=message_id,
                completed_at=None,
            )
        )
        return connection.execute(statement).rowcount == 1
