"""Job search, worker heartbeats and queue samples (``store.job_search``, ``store.workers``).

``job_records`` gains ``created_at`` (when the job was first recorded; never changes, so it orders
``GET /v1/jobs`` pages and keyset cursors stay exact) and ``enqueued_by`` (the token or CLI user
that enqueued it, which scopes a service token's listing). Existing rows get the earliest time they
carry. The single-column indexes on ``user_id`` and ``state`` give way to ``(user_id, created_at,
message_id)`` and ``(state, created_at, message_id)``, which serve the same lookups and the ordered,
paginated listing; three more indexes serve the listing by enqueuer, the unfiltered listing, and
the trends (``finished_at, queue, state``, read from the index alone).

``worker_heartbeats`` holds one row per worker process (its last beat); ``queue_samples`` one row
per queue and minute (ready and delayed messages), written by the workers' heartbeat threads.

Revision ID: 0008_jobs_workers
Revises: 0007_reports
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_jobs_workers"
down_revision: str | None = "0007_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_records") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued_by", sa.String(128), nullable=True))
    op.execute(
        "UPDATE job_records SET created_at = COALESCE(enqueued_at, started_at, updated_at) "
        "WHERE created_at IS NULL"
    )
    with op.batch_alter_table("job_records") as batch:
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.drop_index("ix_job_records_user_id", table_name="job_records")
    op.drop_index("ix_job_records_state", table_name="job_records")
    op.create_index("ix_job_records_user_created", "job_records", ["user_id", "created_at", "message_id"])
    op.create_index("ix_job_records_state_created", "job_records", ["state", "created_at", "message_id"])
    op.create_index(
        "ix_job_records_enqueued_by_created", "job_records", ["enqueued_by", "created_at", "message_id"]
    )
    op.create_index("ix_job_records_created", "job_records", ["created_at", "message_id"])
    op.create_index("ix_job_records_finished", "job_records", ["finished_at", "queue", "state"])

    op.create_table(
        "worker_heartbeats",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("parent_pid", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(128), nullable=False),
        sa.Column(
            "queues",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("processed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("interval_seconds", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_worker_heartbeats"),
    )
    op.create_index("ix_worker_heartbeats_beat_at", "worker_heartbeats", ["beat_at"])
    op.create_table(
        "queue_samples",
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready", sa.Integer(), nullable=False),
        sa.Column("delayed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("queue", "at", name="pk_queue_samples"),
    )
    op.create_index("ix_queue_samples_at", "queue_samples", ["at"])


def downgrade() -> None:
    op.drop_index("ix_queue_samples_at", table_name="queue_samples")
    op.drop_table("queue_samples")
    op.drop_index("ix_worker_heartbeats_beat_at", table_name="worker_heartbeats")
    op.drop_table("worker_heartbeats")
    op.drop_index("ix_job_records_finished", table_name="job_records")
    op.drop_index("ix_job_records_created", table_name="job_records")
    op.drop_index("ix_job_records_enqueued_by_created", table_name="job_records")
    op.drop_index("ix_job_records_state_created", table_name="job_records")
    op.drop_index("ix_job_records_user_created", table_name="job_records")
    op.create_index("ix_job_records_user_id", "job_records", ["user_id"])
    op.create_index("ix_job_records_state", "job_records", ["state"])
    with op.batch_alter_table("job_records") as batch:
        batch.drop_column("enqueued_by")
        batch.drop_column("created_at")
