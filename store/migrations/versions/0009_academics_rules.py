"""The academics rules: grading schemes, intervention strategies, IEP reminders, processed events.

- ``grading_categories``: a course's weighted categories (``course_id``, ``name``, ``weight``);
  ``assignments.category`` names one of its course's categories (a name, not a key: the column is
  added and dropped in place on SQLite, where a foreign key would make Alembic copy the
  ``assignments`` table, and dropping the copied-from table with foreign keys on would cascade into
  ``grades``); ``courses.letter_scale`` (JSON, None = the default scale).
- ``interventions.strategies`` (JSON list, ``[]`` for existing rows) and ``interventions.summary``.
- ``iep_reminders``: one row per IEP, review due date and milestone (days before the review is due).
  ``ieps.last_reminded_days`` counted days since the IEP started; it now names the last milestone
  before the review, so existing values are cleared (the reminders are due again by the new rule).
- ``processed_events``: ``(handler, event_id)`` of each event a handler applied.

Revision ID: 0009_academics_rules
Revises: 0008_jobs_workers
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_academics_rules"
down_revision: str | None = "0008_jobs_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "grading_categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.CheckConstraint("weight > 0", name="ck_grading_categories_weight"),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name="fk_grading_categories_course_id_courses", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_grading_categories"),
        sa.UniqueConstraint("course_id", "name", name="uq_grading_categories_course_id_name"),
    )
    # Plain ALTER TABLE ... ADD COLUMN on both databases (no batch copy of these tables on SQLite).
    op.add_column("assignments", sa.Column("category", sa.String(64), nullable=True))
    op.add_column("courses", sa.Column("letter_scale", _json(), nullable=True))
    op.add_column(
        "interventions", sa.Column("strategies", _json(), server_default=sa.text("'[]'"), nullable=False)
    )
    op.add_column("interventions", sa.Column("summary", sa.String(255), nullable=True))
    op.execute("UPDATE ieps SET last_reminded_days = NULL")
    op.create_table(
        "iep_reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("iep_id", sa.Integer(), nullable=False),
        sa.Column("review_due_on", sa.Date(), nullable=False),
        sa.Column("days_before", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["iep_id"], ["ieps.id"], name="fk_iep_reminders_iep_id_ieps", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_iep_reminders"),
        sa.UniqueConstraint(
            "iep_id", "review_due_on", "days_before", name="uq_iep_reminders_iep_id_review_due_on_days_before"
        ),
    )
    op.create_table(
        "processed_events",
        sa.Column("handler", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handler", "event_id", name="pk_processed_events"),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_events_processed_at", table_name="processed_events")
    op.drop_table("processed_events")
    op.drop_table("iep_reminders")
    op.execute(
        "UPDATE ieps SET last_reminded_days = NULL"
    )  # milestones before the review, not since the start
    op.drop_column("interventions", "summary")
    op.drop_column("interventions", "strategies")
    op.drop_column("courses", "letter_scale")
    op.drop_column("assignments", "category")
    op.drop_table("grading_categories")
