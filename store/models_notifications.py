"""Digest events: what happened to a user that a digest (daily grades, weekly) will tell them.

An event waits with ``digested_at`` unset until a digest carrying it has been delivered; then it
records when and under which digest key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base
from store.types import BigIntId, utcnow


class DigestEvent(Base):
    __tablename__ = "digest_events"
    __table_args__ = (Index("ix_digest_events_pending", "kind", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    digested_at: Mapped[datetime | None]
    digest_key: Mapped[str | None] = mapped_column(String(255))
