"""The analytics reports (``actors.reports.analytics``): lesson views, refunds, requested reports.

``lesson_views`` is new (engagement: views, time spent, drop-off by lesson). ``payments`` gains
``kind`` (``payment`` or ``refund``; every existing row is a payment). ``reports`` gains what a
requested report needs: the job making it (``message_id``), its file's ``storage_key``, its
``row_count``, the ``error`` it failed with, and the API token that asked (``requested_token``).

Revision ID: 0007_reports
Revises: 0006_ledger_owners
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_reports"
down_revision: str | None = "0006_ledger_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lesson_views",
        sa.Column("id", _big_id(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("lesson_id", sa.Integer(), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds_spent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completed", sa.Boolean(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lesson_views"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_lesson_views_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["course_id"], ["courses.id"], name="fk_lesson_views_course_id_courses", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["lesson_id"], ["lessons.id"], name="fk_lesson_views_lesson_id_lessons", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_lesson_views_course_id_viewed_at", "lesson_views", ["course_id", "viewed_at"])
    op.create_index("ix_lesson_views_user_id_viewed_at", "lesson_views", ["user_id", "viewed_at"])
    op.create_index("ix_lesson_views_lesson_id", "lesson_views", ["lesson_id"])
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), server_default="payment", nullable=False))
        batch.create_check_constraint("ck_payments_kind", "kind IN ('payment', 'refund')")
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("message_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("storage_key", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("row_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("requested_token", sa.String(128), nullable=True))
    op.create_index("ix_reports_message_id", "reports", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_reports_message_id", table_name="reports")
    with op.batch_alter_table("reports") as batch:
        for column in ("requested_token", "error", "row_count", "storage_key", "message_id"):
            batch.drop_column(column)
    with op.batch_alter_table("payments") as batch:
        batch.drop_constraint("ck_payments_kind", type_="check")
        batch.drop_column("kind")
    op.drop_table("lesson_views")
