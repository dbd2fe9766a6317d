"""The ledger's owners and owner-checked claims (``store.ledger``, ``store.models_ledger``).

``deliveries`` gains ``claim_token`` (who holds a pending claim), ``owner_id`` (the worker process
holding it), ``sending_at`` (when its request may have left), a key unique per channel instead of
alone, and a small index of the rows still open (pending, unknown). ``ledger_owners`` is new.

Existing rows keep working: sent, failed and skipped rows are read as before; a pending row from
before the upgrade has no owner and no token, and is judged as before, by its age (its phase being
unknown, the unknown-outcome policy applies once its lease has run out).

Revision ID: 0006_ledger_owners
Revises: 0005_schedules
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_ledger_owners"
down_revision: str | None = "0005_schedules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('pending', 'unknown')"


def upgrade() -> None:
    op.create_table(
        "ledger_owners",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_owners"),
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claim_token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("owner_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_deliveries_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_deliveries_idempotency_key_channel", ["idempotency_key", "channel"]
        )
    op.create_index(
        "ix_deliveries_open",
        "deliveries",
        ["status"],
        postgresql_where=sa.text(OPEN),
        sqlite_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("uq_deliveries_idempotency_key_channel", type_="unique")
        batch.create_unique_constraint("uq_deliveries_idempotency_key", ["idempotency_key"])
        batch.drop_column("sending_at")
        batch.drop_column("owner_id")
        batch.drop_column("claim_token")
    op.drop_table("ledger_owners")
