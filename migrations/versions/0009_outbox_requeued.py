"""republish: an outbox row counts how often it was queued again while it waited

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 01:00:00

`payout-manager events republish` queues stored events again; an event still waiting in the
outbox is not queued twice but counted (`requeued`). The relay clears a row only at the count it
read, so a republish landing while the relay produces that very row sends it once more, in its
place behind the republished events before it (`payout_manager.events.republish`).
Adding a column with a constant default rewrites no row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "payout_event_outbox",
        sa.Column("requeued", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("payout_event_outbox", "requeued")
