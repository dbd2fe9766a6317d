"""The schema: every table edujobs reads or writes, as typed SQLAlchemy 2 models.

Timestamps are aware UTC datetimes (``store.types.UTCDateTime``). Constraint and index names come
from one naming convention so that Alembic migrations name them the same on SQLite and PostgreSQL.
Enumerated values (roles, statuses) are plain strings guarded by CHECK constraints; the accepted
values are the ``*_VALUES`` tuples below. The migrations (``0001_initial`` onwards) create exactly
this schema: a test compares them. A model declared in another module must be listed in
``store.migrate.MODEL_MODULES``.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.types import BigIntId, JSONType, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLE_VALUES = ("student", "instructor", "parent", "admin")
ENROLLMENT_STATUS_VALUES = ("active", "completed", "dropped")
ATTENDANCE_STATUS_VALUES = ("present", "absent", "late", "excused")
INTERVENTION_STATUS_VALUES = ("open", "closed")
MEDIA_KIND_VALUES = ("video", "image")
MEDIA_STATUS_VALUES = ("pending", "processing", "ready", "failed")
REPORT_FORMAT_VALUES = ("pdf", "xlsx", "csv", "json")
REPORT_STATUS_VALUES = ("pending", "running", "ready", "failed", "expired")
PAYMENT_KIND_VALUES = ("payment", "refund")
JOB_STATE_VALUES = ("enqueued", "running", "succeeded", "failed", "dead", "cancelled")
DEFAULT_CHANNEL_ORDER = ("push", "sms", "email")


def one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """A named CHECK that ``column`` holds one of ``values``."""
    listed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        list[dict[str, Any]]: JSONType,
    }


def _user_fk(ondelete: str = "CASCADE") -> ForeignKey:
    return ForeignKey("users.id", ondelete=ondelete)


def _course_fk(ondelete: str = "CASCADE") -> ForeignKey:
    return ForeignKey("courses.id", ondelete=ondelete)


class User(Base):
    """A person on the platform, with how and when they may be contacted."""

    __tablename__ = "users"
    __table_args__ = (one_of("role", ROLE_VALUES),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    phone: Mapped[str | None] = mapped_column(String(16))  # E.164, e.g. +15550000001
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    locale: Mapped[str] = mapped_column(String(16), default="en", server_default="en")
    push_tokens: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    channel_order: Mapped[list[str]] = mapped_column(
        default=lambda: list(DEFAULT_CHANNEL_ORDER), server_default=text("""'["push", "sms", "email"]'""")
    )
    opted_out: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    quiet_hours_start: Mapped[time] = mapped_column(
        Time(), default=time(21, 0), server_default=text("'21:00:00'")
    )
    quiet_hours_end: Mapped[time] = mapped_column(
        Time(), default=time(7, 0), server_default=text("'07:00:00'")
    )
    last_active_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Course(Base):
    __tablename__ = "courses"
    __table_args__ = (CheckConstraint("price_cents >= 0", name="price_cents"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    instructor_id: Mapped[int | None] = mapped_column(_user_fk("SET NULL"), index=True)
    starts_on: Mapped[date] = mapped_column(Date())
    ends_on: Mapped[date] = mapped_column(Date())
    price_cents: Mapped[int] = mapped_column(default=0, server_default="0")
    #: The letter scale of the course grade: ``[{"letter": "A", "min_percent": 90}, ...]``, highest
    #: first; None: the default scale (``actors.academics.grading.DEFAULT_LETTER_SCALE``).
    letter_scale: Mapped[list[dict[str, Any]] | None]


class GradingCategory(Base):
    """A weighted category of a course's grading scheme (homework 30, exams 70...): the course
    grade is the weighted mean of its categories' percentages (``actors.academics.grading``)."""

    __tablename__ = "grading_categories"
    __table_args__ = (UniqueConstraint("course_id", "name"), CheckConstraint("weight > 0", name="weight"))

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(_course_fk())
    name: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Float())


class MediaAsset(Base):
    """An uploaded video or image and what the media actors made of it."""

    __tablename__ = "media_assets"
    __table_args__ = (one_of("kind", MEDIA_KIND_VALUES), one_of("status", MEDIA_STATUS_VALUES))

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    source_uri: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending", index=True)
    error: Mapped[str | None] = mapped_column(Text())
    renditions: Mapped[list[dict[str, Any]]] = mapped_column(default=list, server_default=text("'[]'"))
    duration_s: Mapped[float | None] = mapped_column(Float())
    width: Mapped[int | None]
    height: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Lesson(Base):
    __tablename__ = "lessons"
    __table_args__ = (UniqueConstraint("course_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(_course_fk())
    title: Mapped[str] = mapped_column(String(200))
    position: Mapped[int]
    media_asset_id: Mapped[int | None] = mapped_column(
        ForeignKey("media_assets.id", ondelete="SET NULL"), index=True
    )


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("user_id", "course_id"),
        one_of("status", ENROLLMENT_STATUS_VALUES),
        CheckConstraint("progress_percent BETWEEN 0 AND 100", name="progress_percent"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk())
    course_id: Mapped[int] = mapped_column(_course_fk(), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    progress_percent: Mapped[int] = mapped_column(default=0, server_default="0")


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (Index("ix_assignments_course_id_due_at", "course_id", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(_course_fk())
    title: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime]
    max_points: Mapped[float] = mapped_column(Float(), default=100.0, server_default="100")
    #: The assignment's weight within its category (or within the course, without categories).
    weight: Mapped[float] = mapped_column(Float(), default=1.0, server_default="1")
    #: The name of one of its course's ``grading_categories``; None (or a name the course does not
    #: have): uncategorised (``actors.academics.grading`` says how those count).
    category: Mapped[str | None] = mapped_column(String(64))


class Grade(Base):
    """One student's points on one assignment; ``posted_at`` is when the student may see it."""

    __tablename__ = "grades"
    __table_args__ = (UniqueConstraint("assignment_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    points: Mapped[float] = mapped_column(Float())
    graded_at: Mapped[datetime] = mapped_column(default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(index=True)


class CourseGrade(Base):
    __tablename__ = "course_grades"
    __table_args__ = (UniqueConstraint("user_id", "course_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk())
    course_id: Mapped[int] = mapped_column(_course_fk(), index=True)
    percent: Mapped[float] = mapped_column(Float())
    letter: Mapped[str] = mapped_column(String(2))
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attendance(Base):
    """One student's presence in one course on one day (the largest table: no surrogate key)."""

    __tablename__ = "attendance"
    __table_args__ = (
        one_of("status", ATTENDANCE_STATUS_VALUES),
        # Roll-ups read one day across courses; intervention detection reads a range of days.
        Index("ix_attendance_day_course_id", "day", "course_id"),
        # Clustered by its key on SQLite too (PostgreSQL has no such option): smaller and faster.
        {"sqlite_with_rowid": False},
    )

    user_id: Mapped[int] = mapped_column(_user_fk(), primary_key=True)
    course_id: Mapped[int] = mapped_column(_course_fk(), primary_key=True)
    day: Mapped[date] = mapped_column(Date(), primary_key=True)
    status: Mapped[str] = mapped_column(String(8))


class AttendanceRollup(Base):
    __tablename__ = "attendance_rollups"
    __table_args__ = (UniqueConstraint("course_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(_course_fk())
    day: Mapped[date] = mapped_column(Date(), index=True)
    present: Mapped[int] = mapped_column(default=0, server_default="0")
    absent: Mapped[int] = mapped_column(default=0, server_default="0")
    late: Mapped[int] = mapped_column(default=0, server_default="0")
    excused: Mapped[int] = mapped_column(default=0, server_default="0")


class Intervention(Base):
    """Support opened for a student at risk.

    At most one intervention per user and reason is open at a time (a partial unique index): an
    actor opens one with INSERT ... ON CONFLICT DO NOTHING, or catches the IntegrityError, and a
    detection that runs twice opens it once.
    """

    __tablename__ = "interventions"
    __table_args__ = (
        one_of("status", INTERVENTION_STATUS_VALUES),
        Index(
            "uq_interventions_open_user_id_reason",
            "user_id",
            "reason",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    course_id: Mapped[int | None] = mapped_column(_course_fk(), index=True)
    tier: Mapped[int]
    reason: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    #: What the school does about it (the seed's attendance strategies) and why it was opened.
    strategies: Mapped[list[str]] = mapped_column(default=list, server_default=text("'[]'"))
    summary: Mapped[str | None] = mapped_column(String(255))


class Iep(Base):
    """An Individualized Education Program; reminders go out 90, 60 and 30 days before its review is
    due (``iep_reminders``); ``last_reminded_days`` is the last of those milestones reminded."""

    __tablename__ = "ieps"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    coordinator_id: Mapped[int | None] = mapped_column(_user_fk("SET NULL"), index=True)
    starts_on: Mapped[date] = mapped_column(Date(), index=True)
    review_due_on: Mapped[date] = mapped_column(Date())
    last_reminded_days: Mapped[int | None]


class IepReminder(Base):
    """One review reminder sent for an IEP: one per IEP, review due date and milestone (days before
    the review is due), so a rerun or a concurrent run reminds once."""

    __tablename__ = "iep_reminders"
    __table_args__ = (UniqueConstraint("iep_id", "review_due_on", "days_before"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    iep_id: Mapped[int] = mapped_column(ForeignKey("ieps.id", ondelete="CASCADE"))
    review_due_on: Mapped[date] = mapped_column(Date())
    days_before: Mapped[int]
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessedEvent(Base):
    """An event a handler has applied, recorded in the same transaction as its effect: a redelivered
    event (same id) finds its row and changes nothing."""

    __tablename__ = "processed_events"

    handler: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Report(Base):
    """A generated report; identical parameters (``params_hash``) reuse a ready one until it expires."""

    __tablename__ = "reports"
    __table_args__ = (one_of("format", REPORT_FORMAT_VALUES), one_of("status", REPORT_STATUS_VALUES))

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    params_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    storage_uri: Mapped[str | None] = mapped_column(String(1024))
    size_bytes: Mapped[int | None] = mapped_column(BigIntId)
    requested_by: Mapped[int | None] = mapped_column(_user_fk("SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    # Requested reports (``actors.reports.analytics``): the job making it, the file's storage key,
    # how many rows it holds, why it failed, and the API token that asked (who may download it).
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    row_count: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text())
    requested_token: Mapped[str | None] = mapped_column(String(128))


class Payment(Base):
    """Money in (``payment``) or back out (``refund``, a positive amount) for one enrolment."""

    __tablename__ = "payments"
    __table_args__ = (one_of("kind", PAYMENT_KIND_VALUES),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(_user_fk(), index=True)
    course_id: Mapped[int] = mapped_column(_course_fk(), index=True)
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    paid_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(8), default="payment", server_default="payment")


class AccessLog(Base):
    """Who looked at whose education record (FERPA); kept after the users it names are gone."""

    __tablename__ = "access_logs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    user_id: Mapped[int] = mapped_column(index=True)
    actor_user_id: Mapped[int | None] = mapped_column(index=True)
    resource: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Delivery(Base):
    """The side-effect ledger: one row per person-visible effect, keyed by its idempotency key and
    channel (an email and an SMS under one key are two side effects).

    ``status`` is ``pending`` while an attempt holds it (``claim_token``, owned by the worker
    process ``owner_id``; ``sending_at`` once its request may have left), ``sent`` once done,
    ``failed`` when an attempt gave up and a retry may take it again, ``skipped`` for a channel a
    notification did not use, ``unknown`` when the request may or may not have reached the
    provider and the policy was not to send again (see ``store.ledger``, ``store.once``).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "channel"),
        # Only the rows someone may have to look at: small, whatever the table's size.
        Index(
            "ix_deliveries_open",
            "status",
            postgresql_where=text("status IN ('pending', 'unknown')"),
            sqlite_where=text("status IN ('pending', 'unknown')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(32))
    actor_name: Mapped[str] = mapped_column(String(128))
    message_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text())
    claim_token: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(32))
    sending_at: Mapped[datetime | None]


class JobRecord(Base):
    """The state of one Dramatiq message, as users and operators see it (``store.jobs``)."""

    __tablename__ = "job_records"
    __table_args__ = (
        one_of("state", JOB_STATE_VALUES),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        # ``GET /v1/jobs`` lists newest first by (created_at, message_id), which never change, so a
        # keyset cursor stays exact while jobs move; each filter it serves has its own index
        # (store.job_search), and trends read (finished_at, queue, state) from the index alone.
        Index("ix_job_records_user_created", "user_id", "created_at", "message_id"),
        Index("ix_job_records_enqueued_by_created", "enqueued_by", "created_at", "message_id"),
        Index("ix_job_records_state_created", "state", "created_at", "message_id"),
        Index("ix_job_records_created", "created_at", "message_id"),
        Index("ix_job_records_finished", "finished_at", "queue", "state"),
    )

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    actor_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None]
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text())
    result_summary: Mapped[dict[str, Any] | None]
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
    #: When the job was first recorded (by its producer or, first, a worker); never changes.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Who enqueued it: ``token:<name>`` through the HTTP API, ``cli:<user>`` through ``edujobs send``.
    enqueued_by: Mapped[str | None] = mapped_column(String(128))


class AuditLog(Base):
    """One operator action (requeue, purge, cancel, token change...), kept seven years."""

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
