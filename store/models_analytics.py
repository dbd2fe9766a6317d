"""Lesson views: who opened which lesson, when, for how long, and whether they finished it.

The engagement figures of the analytics reports (active users per day and week, lesson views,
time spent, drop-off by lesson) are aggregates of this table. ``course_id`` repeats the lesson's
course so that a report over a few courses and a date range reads one index range, not a join.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from store.models import Base
from store.types import BigIntId, utcnow


class LessonView(Base):
    __tablename__ = "lesson_views"
    __table_args__ = (
        Index("ix_lesson_views_course_id_viewed_at", "course_id", "viewed_at"),
        Index("ix_lesson_views_user_id_viewed_at", "user_id", "viewed_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    lesson_id: Mapped[int] = mapped_column(ForeignKey("lessons.id", ondelete="CASCADE"), index=True)
    viewed_at: Mapped[datetime] = mapped_column(default=utcnow)
    seconds_spent: Mapped[int] = mapped_column(default=0, server_default="0")
    completed: Mapped[bool] = mapped_column(default=False, server_default="0")
