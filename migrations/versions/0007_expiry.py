"""expiry: an index of the UNPAID payouts by creation time, where the expiry finds its candidates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00

Partial, so it holds only the payouts that may still expire, however many have been paid out.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_payout_unpaid_created_at",
        "payout",
        ["created_at"],
        postgresql_where=sa.text("status = 'UNPAID'"),
    )


def downgrade() -> None:
    op.drop_index("ix_payout_unpaid_created_at", table_name="payout")
