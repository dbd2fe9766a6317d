"""The ledger as operators see it: side effects with an unknown outcome, claims in progress, and
an operator's verdict on an unknown outcome (``edujobs deliveries``).

An ``unknown`` row is a side effect whose request may or may not have reached the provider, held
back by the unknown-outcome policy (``store.once``). Only an operator (who can ask the provider, or
the person) knows better: ``resolve`` records the verdict in the ledger and the audit log.

- sent: the row becomes ``sent``; redeliveries of the key answer "duplicate", as for any delivery;
- not sent: the row becomes ``failed``; the next message with this key and channel (the producer
  sending it again, ``edujobs send ... --idempotency-key KEY``) performs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Table, select, update

from store import audit
from store.clock import db_now, seconds_since
from store.ledger_sql import FAILED, PENDING, SENT, UNKNOWN
from store.models import Delivery
from store.models_ledger import LedgerOwner

_deliveries: Table = Delivery.__table__  # type: ignore[assignment]
_owners: Table = LedgerOwner.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class OpenDelivery:
    key: str
    channel: str
    status: str  # "unknown" or "pending"
    actor_name: str
    message_id: str
    user_id: int | None
    attempts: int
    claimed_at: datetime
    completed_at: datetime | None
    error: str | None
    #: Pending claims: whether the request may have left, and seconds since its owner's last beat
    #: (None: no owner known, a claim from before owners existed or an owner long gone).
    sending: bool
    owner_silent_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        fields = dict(self.__dict__)
        for name in ("claimed_at", "completed_at"):
            value = fields[name]
            fields[name] = value.isoformat() if isinstance(value, datetime) else None
        return fields


def open_deliveries(
    engine: Engine,
    *,
    statuses: tuple[str, ...] = (UNKNOWN, PENDING),
    channel: str | None = None,
    limit: int = 100,
) -> list[OpenDelivery]:
    """Rows whose status is in ``statuses`` (``unknown``, ``pending``), oldest first."""
    c, o = _deliveries.c, _owners.c
    dialect = engine.dialect.name
    statement = (
        select(
            c.idempotency_key.label("key"),
            c.channel,
            c.status,
            c.actor_name,
            c.message_id,
            c.user_id,
            c.attempts,
            c.claimed_at,
            c.completed_at,
            c.error,
            c.sending_at.is_not(None).label("sending"),
            seconds_since(o.beat_at, dialect).label("owner_silent_seconds"),
        )
        .select_from(_deliveries.outerjoin(_owners, o.id == c.owner_id))
        .where(c.status.in_(statuses))
        .order_by(c.claimed_at, c.id)
        .limit(limit)
    )
    if channel is not None:
        statement = statement.where(c.channel == channel)
    with engine.connect() as connection:
        return [OpenDelivery(**row._mapping) for row in connection.execute(statement)]


def resolve(engine: Engine, key: str, channel: str, *, sent: bool, by: str) -> None:
    """Record an operator's verdict on an unknown outcome; ``LookupError`` if ``(key, channel)`` is
    not an unknown outcome."""
    c = _deliveries.c
    verdict = "sent" if sent else "not sent"
    statement = (
        update(_deliveries)
        .where(c.idempotency_key == key, c.channel == channel, c.status == UNKNOWN)
        .values(
            status=SENT if sent else FAILED,
            error=f"unknown outcome resolved as {verdict} by {by}",
            completed_at=db_now(engine.dialect.name),
        )
    )
    with engine.begin() as connection:
        if connection.execute(statement).rowcount != 1:
            raise LookupError(f"no unknown outcome {key!r} on channel {channel!r} in the ledger")
    audit.record(engine, actor=by, action="deliveries.resolve", target=f"{channel}:{key}",
                 details={"verdict": verdict})  # fmt: skip
