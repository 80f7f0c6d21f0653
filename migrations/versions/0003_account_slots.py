"""account slots: an account's balance split over rows that can be locked one at a time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_slot",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("own_amount", sa.BigInteger(), nullable=False),
        sa.Column("held_debit", sa.BigInteger(), nullable=False),
        sa.Column("held_credit", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "held_debit >= 0 AND held_credit >= 0", name=op.f("ck_account_slot_holds_not_negative")
        ),
        sa.CheckConstraint("slot >= 0", name=op.f("ck_account_slot_slot_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_account_slot_account_id_account")
        ),
        sa.PrimaryKeyConstraint("account_id", "slot", name=op.f("pk_account_slot")),
    )
    # Every balance so far lives in slot 0, and so does every past balance and every plan's net.
    op.execute(
        "INSERT INTO account_slot (account_id, slot, own_amount, held_debit, held_credit)"
        " SELECT id, 0, own_amount, held_debit, held_credit FROM account"
    )
    op.drop_constraint(op.f("ck_account_holds_not_negative"), "account", type_="check")
    for column in ("own_amount", "held_debit", "held_credit"):
        op.drop_column("account", column)

    op.add_column("account_balance", sa.Column("slot", sa.SmallInteger(), nullable=False, server_default="0"))
    op.alter_column("account_balance", "slot", server_default=None)
    op.drop_index(op.f("ix_account_balance_account_id_at"), table_name="account_balance")
    op.create_index(
        op.f("ix_account_balance_account_id_slot_at"), "account_balance", ["account_id", "slot", "at"]
    )

    op.add_column(
        "posting_plan_account", sa.Column("slot", sa.SmallInteger(), nullable=False, server_default="0")
    )
    op.alter_column("posting_plan_account", "slot", server_default=None)


def downgrade() -> None:
    # Past balances of an account with several slots cannot become one row per change again.
    split = op.get_bind().execute(sa.text("SELECT count(*) FROM account_slot WHERE slot <> 0")).scalar_one()
    if split:
        raise RuntimeError(f"{split} account slots beyond slot 0 exist: revision 0002 cannot hold them")
    op.drop_column("posting_plan_account", "slot")
    op.drop_index(op.f("ix_account_balance_account_id_slot_at"), table_name="account_balance")
    op.drop_column("account_balance", "slot")
    op.create_index(op.f("ix_account_balance_account_id_at"), "account_balance", ["account_id", "at"])

    for column in ("own_amount", "held_debit", "held_credit"):
        op.add_column("account", sa.Column(column, sa.BigInteger(), nullable=False, server_default="0"))
        op.alter_column("account", column, server_default=None)
    op.execute(
        "UPDATE account a SET own_amount = s.own, held_debit = s.debit, held_credit = s.credit"
        " FROM (SELECT account_id, sum(own_amount) AS own, sum(held_debit) AS debit,"
        " sum(held_credit) AS credit FROM account_slot GROUP BY account_id) s WHERE s.account_id = a.id"
    )
    op.create_check_constraint(
        op.f("ck_account_holds_not_negative"), "account", "held_debit >= 0 AND held_credit >= 0"
    )
    op.drop_table("account_slot")
