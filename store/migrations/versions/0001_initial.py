"""The initial schema: users and courses, academics, media, reports, the ledger, job state, audit.

Self-contained on purpose (it does not import ``store.models``): the models will change, this
revision must keep creating exactly what it created on the day it was written.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "users",
    "media_assets",
    "courses",
    "lessons",
    "enrollments",
    "assignments",
    "grades",
    "course_grades",
    "attendance",
    "attendance_rollups",
    "interventions",
    "ieps",
    "reports",
    "payments",
    "access_logs",
    "deliveries",
    "job_records",
    "audit_logs",
)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id(table: str) -> tuple[sa.Column[int], sa.PrimaryKeyConstraint]:
    return sa.Column("id", sa.Integer(), nullable=False), sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def _big_key(table: str) -> tuple[sa.Column[int], sa.PrimaryKeyConstraint]:
    return sa.Column("id", _big_id(), nullable=False), sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def _one_of(table: str, column: str, values: Sequence[str]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"ck_{table}_{column}")


def _index(table: str, *columns: str, name: str | None = None, unique: bool = False) -> None:
    op.create_index(name or f"ix_{table}_{'_'.join(columns)}", table, list(columns), unique=unique)


def upgrade() -> None:
    op.create_table(
        "users",
        *_id("users"),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("time_zone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("locale", sa.String(16), server_default="en", nullable=False),
        sa.Column("push_tokens", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column(
            "channel_order", _json(), server_default=sa.text("""'["push", "sms", "email"]'"""), nullable=False
        ),
        sa.Column("opted_out", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("quiet_hours_start", sa.Time(), server_default=sa.text("'21:00:00'"), nullable=False),
        sa.Column("quiet_hours_end", sa.Time(), server_default=sa.text("'07:00:00'"), nullable=False),
        sa.Column("last_active_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        _one_of("users", "role", ("student", "instructor", "parent", "admin")),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    _index("users", "last_active_at")

    op.create_table(
        "media_assets",
        *_id("media_assets"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_uri", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("renditions", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        _one_of("media_assets", "kind", ("video", "image")),
        _one_of("media_assets", "status", ("pending", "processing", "ready", "failed")),
    )
    _index("media_assets", "status")

    op.create_table(
        "courses",
        *_id("courses"),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("instructor_id", sa.Integer(), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("price_cents", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("price_cents >= 0", name="ck_courses_price_cents"),
        _fk("courses", "instructor_id", "users", "SET NULL"),
        sa.UniqueConstraint("code", name="uq_courses_code"),
    )
    _index("courses", "instructor_id")

    op.create_table(
        "lessons",
        *_id("lessons"),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("media_asset_id", sa.Integer(), nullable=True),
        _fk("lessons", "course_id", "courses"),
        _fk("lessons", "media_asset_id", "media_assets", "SET NULL"),
        sa.UniqueConstraint("course_id", "position", name="uq_lessons_course_id_position"),
    )
    _index("lessons", "media_asset_id")

    op.create_table(
        "enrollments",
        *_id("enrollments"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", _timestamp(), nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("progress_percent", sa.Integer(), server_default="0", nullable=False),
        _one_of("enrollments", "status", ("active", "completed", "dropped")),
        sa.CheckConstraint("progress_percent BETWEEN 0 AND 100", name="ck_enrollments_progress_percent"),
        _fk("enrollments", "user_id", "users"),
        _fk("enrollments", "course_id", "courses"),
        sa.UniqueConstraint("user_id", "course_id", name="uq_enrollments_user_id_course_id"),
    )
    _index("enrollments", "course_id")

    op.create_table(
        "assignments",
        *_id("assignments"),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("due_at", _timestamp(), nullable=False),
        sa.Column("max_points", sa.Float(), server_default="100", nullable=False),
        sa.Column("weight", sa.Float(), server_default="1", nullable=False),
        _fk("assignments", "course_id", "courses"),
    )
    _index("assignments", "course_id", "due_at")

    op.create_table(
        "grades",
        *_id("grades"),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("graded_at", _timestamp(), nullable=False),
        sa.Column("posted_at", _timestamp(), nullable=True),
        _fk("grades", "assignment_id", "assignments"),
        _fk("grades", "user_id", "users"),
        sa.UniqueConstraint("assignment_id", "user_id", name="uq_grades_assignment_id_user_id"),
    )
    _index("grades", "user_id")
    _index("grades", "posted_at")

    op.create_table(
        "course_grades",
        *_id("course_grades"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("letter", sa.String(2), nullable=False),
        sa.Column("computed_at", _timestamp(), nullable=False),
        _fk("course_grades", "user_id", "users"),
        _fk("course_grades", "course_id", "courses"),
        sa.UniqueConstraint("user_id", "course_id", name="uq_course_grades_user_id_course_id"),
    )
    _index("course_grades", "course_id")

    op.create_table(
        "attendance",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        _one_of("attendance", "status", ("present", "absent", "late", "excused")),
        _fk("attendance", "user_id", "users"),
        _fk("attendance", "course_id", "courses"),
        sa.PrimaryKeyConstraint("user_id", "course_id", "day", name="pk_attendance"),
        sqlite_with_rowid=False,
    )
    _index("attendance", "day", "course_id")

    op.create_table(
        "attendance_rollups",
        *_id("attendance_rollups"),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(
            sa.Column(status, sa.Integer(), server_default="0", nullable=False)
            for status in ("present", "absent", "late", "excused")
        ),
        _fk("attendance_rollups", "course_id", "courses"),
        sa.UniqueConstraint("course_id", "day", name="uq_attendance_rollups_course_id_day"),
    )
    _index("attendance_rollups", "day")

    op.create_table(
        "interventions",
        *_id("interventions"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=True),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("opened_at", _timestamp(), nullable=False),
        sa.Column("closed_at", _timestamp(), nullable=True),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        _one_of("interventions", "status", ("open", "closed")),
        _fk("interventions", "user_id", "users"),
        _fk("interventions", "course_id", "courses"),
    )
    _index("interventions", "user_id")
    _index("interventions", "course_id")
    # One open intervention per user and reason: detection that runs twice opens it once.
    op.create_index(
        "uq_interventions_open_user_id_reason",
        "interventions",
        ["user_id", "reason"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )

    op.create_table(
        "ieps",
        *_id("ieps"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("coordinator_id", sa.Integer(), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("review_due_on", sa.Date(), nullable=False),
        sa.Column("last_reminded_days", sa.Integer(), nullable=True),
        _fk("ieps", "user_id", "users"),
        _fk("ieps", "coordinator_id", "users", "SET NULL"),
    )
    _index("ieps", "user_id")
    _index("ieps", "coordinator_id")
    _index("ieps", "starts_on")

    op.create_table(
        "reports",
        *_id("reports"),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("params", _json(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("params_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("storage_uri", sa.String(1024), nullable=True),
        sa.Column("size_bytes", _big_id(), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("expires_at", _timestamp(), nullable=True),
        _one_of("reports", "format", ("pdf", "xlsx", "csv", "json")),
        _one_of("reports", "status", ("pending", "running", "ready", "failed", "expired")),
        _fk("reports", "requested_by", "users", "SET NULL"),
    )
    _index("reports", "params_hash")
    _index("reports", "requested_by")
    _index("reports", "expires_at")

    op.create_table(
        "payments",
        *_big_key("payments"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("course_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), server_default="USD", nullable=False),
        sa.Column("paid_at", _timestamp(), nullable=False),
        _fk("payments", "user_id", "users"),
        _fk("payments", "course_id", "courses"),
    )
    _index("payments", "user_id")
    _index("payments", "course_id")
    _index("payments", "paid_at")

    op.create_table(
        "access_logs",
        *_big_key("access_logs"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
    )
    _index("access_logs", "user_id")
    _index("access_logs", "actor_user_id")
    _index("access_logs", "at")

    op.create_table(
        "deliveries",
        *_big_key("deliveries"),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("actor_name", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("provider_message_id", sa.String(255), nullable=True),
        sa.Column("claimed_at", _timestamp(), nullable=False),
        sa.Column("completed_at", _timestamp(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
    )
    _index("deliveries", "message_id")
    _index("deliveries", "user_id")

    op.create_table(
        "job_records",
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("actor_name", sa.String(128), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_summary", _json(), nullable=True),
        sa.Column("enqueued_at", _timestamp(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
        _one_of("job_records", "state", ("enqueued", "running", "succeeded", "failed", "dead", "cancelled")),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name="ck_job_records_progress"),
        sa.PrimaryKeyConstraint("message_id", name="pk_job_records"),
    )
    _index("job_records", "user_id")
    _index("job_records", "state")
    _index("job_records", "updated_at")

    op.create_table(
        "audit_logs",
        *_big_key("audit_logs"),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("details", _json(), server_default=sa.text("'{}'"), nullable=False),
    )
    _index("audit_logs", "at")
    _index("audit_logs", "action")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
