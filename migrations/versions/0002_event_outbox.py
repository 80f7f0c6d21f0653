"""event outbox: event rows waiting for Kafka

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payout_event_outbox",
        sa.Column("event_row_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_row_id"],
            ["payout_event.id"],
            name=op.f("fk_payout_event_outbox_event_row_id_payout_event"),
        ),
        sa.PrimaryKeyConstraint("event_row_id", name=op.f("pk_payout_event_outbox")),
    )
    # Every event written before this revision waited in the database: all of them are unpublished.
    op.execute("INSERT INTO payout_event_outbox (event_row_id) SELECT id FROM payout_event")


def downgrade() -> None:
    op.drop_table("payout_event_outbox")
