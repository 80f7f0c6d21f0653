"""Every table, on the one MetaData that Alembic's env.py also uses.

Money is `bigint` minor units everywhere; no float or numeric column holds an amount.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from payout_manager.payouts.model import PayoutStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = DateTime(timezone=True)

account = Table(
    "account",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("currency", String(3), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
)

# An account's balance is the sum of its slots. Slot 0 is made with the account; a change that
# needs no check of the account's funds (a credit, a revert) locks any one free slot, and makes a
# new one when all are locked, so concurrent changes to one hot account need not queue. A change
# that checks funds locks every slot. A plan's net on an account lives in one slot.
account_slot = Table(
    "account_slot",
    metadata,
    Column("account_id", BigInteger, ForeignKey("account.id"), nullable=False),
    Column("slot", SmallInteger, nullable=False),
    Column("own_amount", BigInteger, nullable=False),
    # Sums over the plans on hold in this slot of each plan's net debit / net credit.
    Column("held_debit", BigInteger, nullable=False),
    Column("held_credit", BigInteger, nullable=False),
    PrimaryKeyConstraint("account_id", "slot"),
    CheckConstraint("held_debit >= 0 AND held_credit >= 0", name="holds_not_negative"),
    CheckConstraint("slot >= 0", name="slot_not_negative"),
)

# One row per change of a slot, so that an account's balances at a past moment can be read back:
# the sum over its slots of each slot's last row at that moment.
account_balance = Table(
    "account_balance",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, ForeignKey("account.id"), nullable=False),
    Column("slot", SmallInteger, nullable=False),
    Column("at", Timestamp, nullable=False),
    Column("own_amount", BigInteger, nullable=False),
    Column("min_available_amount", BigInteger, nullable=False),
    Column("max_available_amount", BigInteger, nullable=False),
    Index(None, "account_id", "slot", "at"),
)

posting_plan = Table(
    "posting_plan",
    metadata,
    Column("id", Text, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    CheckConstraint("status IN ('HOLD', 'COMMITTED', 'ROLLED_BACK')", name="status"),
)

posting = Table(
    "posting",
    metadata,
    Column("plan_id", Text, ForeignKey("posting_plan.id"), nullable=False),
    Column("batch_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("from_id", BigInteger, ForeignKey("account.id"), nullable=False),
    Column("to_id", BigInteger, ForeignKey("account.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", Text, nullable=False),
    PrimaryKeyConstraint("plan_id", "batch_id", "position"),
    CheckConstraint("amount >= 0 AND from_id <> to_id", name="valid_posting"),
)

# Each plan's net effect per account, summed over its batches: what commit and rollback apply.
posting_plan_account = Table(
    "posting_plan_account",
    metadata,
    Column("plan_id", Text, ForeignKey("posting_plan.id"), nullable=False),
    Column("account_id", BigInteger, ForeignKey("account.id"), nullable=False),
    # The account's slot that holds this net.
    Column("slot", SmallInteger, nullable=False),
    Column("net", BigInteger, nullable=False),
    PrimaryKeyConstraint("plan_id", "account_id"),
)

payout = Table(
    "payout",
    metadata,
    Column("payout_id", Text, primary_key=True),
    Column("party_id", Text, nullable=False),
    Column("shop_id", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("requested_amount", BigInteger, nullable=False),
    Column("requested_payout_tool_id", Text, nullable=False),
    Column("payout_tool_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("cash_flow", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("cancel_details", Text, nullable=False, server_default=text("''")),
    Column("revision", BigInteger, nullable=False),
    # The identity of the caller whose create made it (SPEC 5).
    Column("created_by", Text, nullable=False),
    # Why the bank or provider refused it: set exactly when FAILED.
    Column("failure_code", Text, nullable=True),
    Column("failure_details", Text, nullable=True),
    CheckConstraint(
        "(status = 'FAILED') = (failure_code IS NOT NULL AND failure_details IS NOT NULL)",
        name="failure_when_failed",
    ),
    CheckConstraint(f"status IN ({', '.join(repr(status.value) for status in PayoutStatus)})", name="status"),
    Index("ix_payout_created", text("created_at DESC"), text("payout_id DESC")),
    Index(
        "ix_payout_party_shop_created", "party_id", "shop_id", text("created_at DESC"), text("payout_id DESC")
    ),
    # The expiry's candidates, oldest first (payout_manager.expiry); only UNPAID ones, so small.
    Index(
        "ix_payout_unpaid_created_at",
        "created_at",
        postgresql_where=text(f"status = '{PayoutStatus.UNPAID.value}'"),
    ),
)

payout_event = Table(
    "payout_event",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
    Column("payout_id", Text, ForeignKey("payout.payout_id"), nullable=False),
    Column("sequence_id", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # The serialized payout_manager.v1.Event, exactly as it is served and published.
    Column("payload", LargeBinary, nullable=False),
    UniqueConstraint("payout_id", "sequence_id"),
)

# Event rows not yet acknowledged by Kafka: one row per event, written in the event's transaction
# and deleted when the broker's delivery report arrives. A queue of row ids rather than a
# "published up to id N" mark, so a transaction that took a lower id but committed after a higher
# one is still found (the outbox gap): the relay reads whatever is here, in id order. A republish
# queues stored events again here (payout_manager.events.republish).
payout_event_outbox = Table(
    "payout_event_outbox",
    metadata,
    Column("event_row_id", BigInteger, ForeignKey("payout_event.id"), primary_key=True),
    # How often a republish queued the row again while it waited. The relay clears a row only at
    # the count it read: one republished while being produced goes out once more, in its place.
    Column("requeued", Integer, nullable=False, server_default=text("0")),
)

# Each shop's payouts UNPAID or PAID (SPEC 1.1's service limit): a place is taken by the create
# and given back by the change that resolves the payout, in their own transactions (migration 0008).
shop_unresolved_payouts = Table(
    "shop_unresolved_payouts",
    metadata,
    Column("party_id", Text, nullable=False),
    Column("shop_id", Text, nullable=False),
    Column("unresolved", BigInteger, nullable=False),
    CheckConstraint("unresolved >= 0", name="not_negative"),
    PrimaryKeyConstraint("party_id", "shop_id"),
)
