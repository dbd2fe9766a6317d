"""Schedules' state: every fire, the scheduler leader's lease, and APScheduler's job store.

- ``schedule_fires``: one row per schedule and fire time (unique), claimed before the message is
  sent, so two schedulers can never both send one fire; ``enqueued`` once RabbitMQ confirmed it,
  ``skipped`` for a fire the misfire policy dropped (with why), ``failed`` while sending fails.
- ``scheduler_leases``: which scheduler process leads, until when (a crashed leader's lease expires).
- ``apscheduler_jobs``: APScheduler's ``SQLAlchemyJobStore`` table, declared here so that the
  migrations create it like every other table; the store finds it and keeps its jobs there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Float, LargeBinary, String, Table, Text, Unicode, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base, one_of
from store.types import BigIntId, utcnow

FIRE_STATUS_VALUES = ("claimed", "enqueued", "skipped", "failed")


class ScheduleFire(Base):
    __tablename__ = "schedule_fires"
    __table_args__ = (
        UniqueConstraint("schedule", "fire_time"),
        one_of("status", FIRE_STATUS_VALUES),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    schedule: Mapped[str] = mapped_column(String(128), index=True)
    fire_time: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    actor_name: Mapped[str] = mapped_column(String(128))
    message_id: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text())


class SchedulerLease(Base):
    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
