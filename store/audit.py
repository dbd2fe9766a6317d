"""The audit trail of operator actions (requeue, purge, cancel, pause...), kept seven years.

Every operator action through the CLI, the HTTP API or the web page is recorded here with who did
it, what, to what, and the details needed to understand it later (counts, reasons, dry-run or not).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from store.models import AuditLog
from store.types import utcnow

logger = logging.getLogger(__name__)


def record(
    engine: Engine, *, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
) -> None:
    """Append one entry: ``actor`` did ``action`` to ``target``."""
    values = {
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "target": target,
        "details": dict(details or {}),
    }
    with engine.begin() as connection:
        connection.execute(insert(AuditLog), values)
    logger.info("Audit: %s %s %s.", actor, action, target)


def recent(engine: Engine, limit: int = 50, *, action: str | None = None) -> list[AuditLog]:
    """The latest entries, newest first (only those of ``action`` if given)."""
    statement = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit)
    if action is not None:
        statement = statement.where(AuditLog.action == action)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(statement))
