"""The ledger's SQL, built once per dialect: every delivery runs several of these statements.

Each is one atomic statement (``store.ledger`` runs them in autocommit). Timestamps are the
database's ``now`` and ages are computed by the database (``store.clock``). A transition of a held
claim names the claim's token (``mine``); a take-over or a hold names everything the judge read
(``unchanged``), so that of two attempts judging one row at once, one wins.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Select, Table, bindparam, delete, func, literal, or_, select, true, update
from sqlalchemy.dialects import postgresql

from store.clock import db_now, seconds_since
from store.models import Delivery
from store.models_ledger import LedgerOwner
from store.upsert import _insert_for

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
UNKNOWN = "unknown"
KEY = ("idempotency_key", "channel")
#: The claim-and-read statement's own columns: whether the claim inserted, whether the read found.
INSERTED = "claim_inserted_"
FOUND = "claim_read_found_"

_deliveries: Table = Delivery.__table__  # type: ignore[assignment]
_owners: Table = LedgerOwner.__table__  # type: ignore[assignment]
_c = _deliveries.c


@functools.lru_cache(maxsize=4)
def statements(dialect: str) -> Statements:
    return Statements(dialect)


class Statements:
    """The ledger's statements for one dialect, built once: every delivery runs several."""

    def __init__(self, dialect: str) -> None:
        now = db_now(dialect)
        self.dialect = dialect
        columns = (*KEY, "actor_name", "message_id", "user_id", "claim_token", "owner_id")
        self.columns = columns
        self.insert = (
            _insert_for(dialect, _deliveries)
            .values(
                {
                    **{name: bindparam(name) for name in columns},
                    "claimed_at": now,
                    "status": PENDING,
                    "attempts": 1,
                }
            )
            .on_conflict_do_nothing(index_elements=list(KEY))
            # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT ... ON CONFLICT. Its
            # set_config runs for an inserted row only, before the commit: see RELAXED_COMMIT.
            .returning(_c.id, *([RELAXED_COMMIT] if dialect == "postgresql" else []))
        )
        owners = _owners.c
        self.judge = (
            select(
                _c.status,
                _c.attempts,
                _c.claim_token,
                _c.owner_id,
                _c.provider_message_id,
                _c.sending_at.is_not(None).label("sending"),
                seconds_since(_c.claimed_at, dialect).label("claim_age"),
                seconds_since(owners.beat_at, dialect).label("beat_age"),
                owners.stopped_at.is_not(None).label("owner_stopped"),
            )
            .select_from(_deliveries.outerjoin(_owners, owners.id == _c.owner_id))
            .where(_c.idempotency_key == bindparam("b_key"), _c.channel == bindparam("b_channel"))
        )
        # Only if nobody changed the row since it was judged: one contender wins.
        unchanged = (
            _c.idempotency_key == bindparam("b_key"),
            _c.channel == bindparam("b_channel"),
            _c.status == bindparam("b_status"),
            _c.attempts == bindparam("b_attempts"),
            _c.claim_token.is_not_distinct_from(bindparam("b_old_token")),
        )
        self.take_over = (
            update(_deliveries)
            .where(*unchanged)
            .values(
                status=PENDING,
                claimed_at=now,
                attempts=_c.attempts + 1,
                completed_at=None,
                sending_at=None,
                actor_name=bindparam("b_actor"),
                message_id=bindparam("b_message"),
                claim_token=bindparam("b_token"),
                owner_id=bindparam("b_owner"),
            )
        )
        self.hold = (
            update(_deliveries)
            .where(*unchanged)
            .values(status=UNKNOWN, completed_at=now, error=bindparam("b_error"))
        )
        mine = (
            _c.idempotency_key == bindparam("b_key"),
            _c.channel == bindparam("b_channel"),
            _c.claim_token == bindparam("b_token"),
        )
        self.begin = update(_deliveries).where(*mine, _c.status == PENDING).values(sending_at=now)
        self.complete = (
            update(_deliveries)
            # An attempt judged dead after its request left, that then completes, knows better.
            .where(
                *mine,
                or_(_c.status == PENDING, _c.status == UNKNOWN),
                *_without_waiting_for_the_disk(dialect),
            )
            .values(
                status=bindparam("b_status"),
                provider_message_id=bindparam("b_provider_id"),
                completed_at=now,
                error=None,
            )
        )
        self.finish = (
            update(_deliveries)
            .where(*mine, _c.status == PENDING)
            .values(status=bindparam("b_status"), error=bindparam("b_error"), completed_at=now)
        )
        self.remove = delete(_deliveries).where(*mine, _c.status == PENDING, _c.sending_at.is_(None))


@functools.lru_cache(maxsize=16)
def claim_and_read(read: Select[Any], columns: tuple[str, ...]) -> Select[Any]:
    """PostgreSQL: ``WITH claim AS (INSERT ... ON CONFLICT DO NOTHING RETURNING ...) SELECT (SELECT
    count(*) FROM claim), r.* FROM (SELECT 1) LEFT JOIN (read) r ON true``: one row whatever the
    read finds, saying whether the claim inserted its row, and the read's row (its marker column
    is NULL when it found none). The claim's ``columns`` are bound as ``claim_<column>``."""
    claim = (
        postgresql.insert(_deliveries)
        .values(
            {
                **{name: bindparam(f"claim_{name}") for name in columns},
                "claimed_at": func.now(),
                "status": PENDING,
                "attempts": 1,
            }
        )
        .on_conflict_do_nothing(index_elements=list(KEY))
        .returning(_c.idempotency_key)
        .cte("claim")
    )
    inserted = select(func.count()).select_from(claim).scalar_subquery().label(INSERTED)
    found = read.add_columns(literal(1).label(FOUND)).subquery("r")
    one = select(literal(1).label("one")).subquery("one")
    relaxed = RELAXED_COMMIT.label(RELAXED)  # one row: runs once, before the commit
    return select(inserted, *found.c, relaxed).select_from(one.outerjoin(found, true()))


#: PostgreSQL: ``synchronous_commit`` off for the current transaction only. Evaluated inside a
#: statement (a RETURNING item, a select column, a WHERE subquery), it makes that statement's
#: commit return without waiting for its WAL to reach the disk.
#:
#: Every ledger write but one uses it: whatever they record before a request leaves (a claim, a
#: take-over) is made durable by the one that must be, the ``sending`` mark (``begin``), whose
#: synchronous commit flushes the WAL up to itself, theirs included; a claim lost in a database
#: crash before that mark was never acted upon. ``complete`` after the request risks losing a
#: ``sent`` in a crash within a fraction of a second: the row then stays ``sending`` and is judged
#: an unknown outcome (held, visible; resent only for critical and high priority, whose policy
#: accepts that), never silently sent twice. So a delivery waits for the disk once, not three times.
RELAXED_COMMIT: Any = func.set_config("synchronous_commit", "off", true())
RELAXED = "claim_relaxed_"


def _without_waiting_for_the_disk(dialect: str) -> tuple[Any, ...]:
    """A WHERE condition applying ``RELAXED_COMMIT`` (PostgreSQL; nothing elsewhere)."""
    if dialect != "postgresql":
        return ()
    return (select(RELAXED_COMMIT).scalar_subquery().is_not(None),)
