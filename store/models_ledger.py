"""Ledger owners: the worker processes holding ledger claims, and when each last showed it was alive.

Each process that claims side effects registers one row and beats it every few seconds
(``store.owners``); a claim whose owner stopped beating belongs to a dead worker and is judged at
once instead of after a fixed lease (``store.ledger``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base


class LedgerOwner(Base):
    __tablename__ = "ledger_owners"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
