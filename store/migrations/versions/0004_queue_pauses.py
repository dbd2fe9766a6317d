"""Paused queues (``store.pauses``).

Revision ID: 0004_queue_pauses
Revises: 0003_digest_events
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_queue_pauses"
down_revision: str | None = "0003_digest_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_pauses",
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("queue", name="pk_queue_pauses"),
    )


def downgrade() -> None:
    op.drop_table("queue_pauses")
