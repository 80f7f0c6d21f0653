"""service limits: at most N unresolved (UNPAID or PAID) payouts per shop, exactly (SPEC 1.1)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 13:10:00

`shop_unresolved_payouts` counts each shop's UNPAID and PAID payouts. The create takes a place in
the same statement that stores the payout (a row lock on the shop's counter, refused with PM007
when the shop is at its limit), and a change to CONFIRMED, CANCELLED or FAILED gives it back in
the change's own transaction: no extra round trip, and exact under any concurrency, since the
counter row serializes a shop's creates as its settlement account already does.

Lock order, the same in both procedures so they cannot deadlock: the payout row, the shop's
counter, then the account slots of the hold or its end.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CREATE_PAYOUT = """
CREATE FUNCTION pm_create_payout(
    p_payout_id text, p_party_id text, p_shop_id text, p_status text, p_revision bigint,
    p_created_at timestamptz, p_requested_amount bigint, p_requested_payout_tool_id text,
    p_payout_tool_id text, p_amount bigint, p_fee bigint, p_currency text, p_cash_flow jsonb,
    p_metadata jsonb, p_created_by text,
    p_plan_id text, p_from bigint[], p_to bigint[], p_amounts bigint[], p_currencies text[],
    p_descriptions text[], p_checked bigint[], p_event_id uuid, p_payload bytea,
    p_max_unresolved bigint
) RETURNS boolean
LANGUAGE plpgsql AS $$
-- Stores a new payout holding its cash flow in plan p_plan_id, and its created event (sequence
-- p_revision, as every event's is its payout's revision) queued for Kafka.
-- False, with nothing done, when a payout with this id exists (waiting for an uncommitted one).
-- PM007 when the shop has p_max_unresolved payouts UNPAID or PAID already.
-- PM001 when a checked (settlement) account's minimum available amount would fall below zero.
DECLARE
    v_short record;
BEGIN
    INSERT INTO payout (payout_id, party_id, shop_id, status, created_at, updated_at,
                        requested_amount, requested_payout_tool_id, payout_tool_id, amount, fee,
                        currency, cash_flow, metadata, created_by, cancel_details, revision)
    VALUES (p_payout_id, p_party_id, p_shop_id, p_status, p_created_at, p_created_at,
            p_requested_amount, p_requested_payout_tool_id, p_payout_tool_id, p_amount, p_fee,
            p_currency, p_cash_flow, p_metadata, p_created_by, '', p_revision)
    ON CONFLICT (payout_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO shop_unresolved_payouts AS s (party_id, shop_id, unresolved)
    VALUES (p_party_id, p_shop_id, 1)
    ON CONFLICT (party_id, shop_id) DO UPDATE SET unresolved = s.unresolved + 1
    WHERE s.unresolved < p_max_unresolved;
    IF NOT FOUND OR p_max_unresolved < 1 THEN
        RAISE EXCEPTION 'shop % of party % has % unresolved payouts, its limit', p_shop_id,
            p_party_id, p_max_unresolved USING ERRCODE = 'PM007';
    END IF;
    SELECT h.account_id, h.own_amount - h.held_debit AS available INTO v_short
    FROM pm_hold_new_plan(p_plan_id, 1, p_created_at, p_from, p_to, p_amounts, p_currencies,
                          p_descriptions, p_checked) h
    WHERE h.own_amount - h.held_debit < 0
    ORDER BY h.account_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'settlement account % lacks % %', v_short.account_id, -v_short.available,
            p_currency USING ERRCODE = 'PM001';
    END IF;
    PERFORM pm_add_event(p_event_id, p_payout_id, p_revision, p_created_at, p_payload);
    RETURN true;
END
$$
"""

CHANGE_PAYOUT = """
CREATE FUNCTION pm_change_payout(
    p_payout_id text, p_revision bigint, p_status text, p_updated_at timestamptz,
    p_cancel_details text, p_failure_code text, p_failure_details text,
    p_accounting text, p_plan_id text, p_revert_plan_id text,
    p_from bigint[], p_to bigint[], p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_event_id uuid, p_payload bytea
) RETURNS boolean
LANGUAGE plpgsql AS $$
-- Moves a payout from revision p_revision - 1 to p_revision with its accounting (NONE, COMMIT,
-- ROLLBACK of the plan p_plan_id, or REVERT: the reversed postings held and committed in the
-- new plan p_revert_plan_id) and its event; a payout leaving UNPAID or PAID for good gives its
-- shop's place back. False, with nothing done, when the payout is no longer at p_revision - 1:
-- the caller read it before a concurrent change and decides again.
DECLARE
    v_payout record;
BEGIN
    SELECT p.party_id, p.shop_id, p.status INTO v_payout FROM payout p
    WHERE p.payout_id = p_payout_id AND p.revision = p_revision - 1 FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_payout.status IN ('UNPAID', 'PAID') AND p_status NOT IN ('UNPAID', 'PAID') THEN
        UPDATE shop_unresolved_payouts SET unresolved = unresolved - 1
        WHERE party_id = v_payout.party_id AND shop_id = v_payout.shop_id;
    END IF;
    IF p_accounting = 'COMMIT' THEN
        PERFORM pm_finish_plan(p_plan_id, 'COMMITTED', p_updated_at);
    ELSIF p_accounting = 'ROLLBACK' THEN
        PERFORM pm_finish_plan(p_plan_id, 'ROLLED_BACK', p_updated_at);
    ELSIF p_accounting = 'REVERT' THEN
        PERFORM pm_hold_new_plan(p_revert_plan_id, 1, p_updated_at, p_from, p_to,
                                 p_amounts, p_currencies, p_descriptions, '{}');
        PERFORM pm_finish_plan(p_revert_plan_id, 'COMMITTED', p_updated_at);
    END IF;
    UPDATE payout SET status = p_status, updated_at = p_updated_at, cancel_details = p_cancel_details,
                      failure_code = p_failure_code, failure_details = p_failure_details,
                      revision = p_revision
    WHERE payout_id = p_payout_id;
    PERFORM pm_add_event(p_event_id, p_payout_id, p_revision, p_updated_at, p_payload);
    RETURN true;
END
$$
"""

CREATE_SIGNATURE = (
    "pm_create_payout(text, text, text, text, bigint, timestamptz, bigint, text, text, bigint, bigint,"
    " text, jsonb, jsonb, text, text, bigint[], bigint[], bigint[], text[], text[], bigint[], uuid, bytea"
)
CHANGE_SIGNATURE = (
    "pm_change_payout(text, bigint, text, timestamptz, text, text, text, text, text, text,"
    " bigint[], bigint[], bigint[], text[], text[], uuid, bytea)"
)


def _revision(name: str) -> ModuleType:
    """An earlier migration's module, whose procedures a downgrade restores."""
    spec = importlib.util.spec_from_file_location(f"_revision_{name}", Path(__file__).with_name(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.create_table(
        "shop_unresolved_payouts",
        sa.Column("party_id", sa.Text(), nullable=False),
        sa.Column("shop_id", sa.Text(), nullable=False),
        sa.Column("unresolved", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("unresolved >= 0", name=op.f("ck_shop_unresolved_payouts_not_negative")),
        sa.PrimaryKeyConstraint("party_id", "shop_id", name=op.f("pk_shop_unresolved_payouts")),
    )
    op.execute(
        "INSERT INTO shop_unresolved_payouts (party_id, shop_id, unresolved)"
        " SELECT party_id, shop_id, count(*) FROM payout WHERE status IN ('UNPAID', 'PAID')"
        " GROUP BY party_id, shop_id"
    )
    op.execute(f"DROP FUNCTION {CREATE_SIGNATURE})")
    op.execute(CREATE_PAYOUT)
    op.execute(f"DROP FUNCTION {CHANGE_SIGNATURE}")
    op.execute(CHANGE_PAYOUT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {CREATE_SIGNATURE}, bigint)")
    op.execute(_revision("0005_payout_functions.py").CREATE_PAYOUT)
    op.execute(f"DROP FUNCTION {CHANGE_SIGNATURE}")
    op.execute(_revision("0006_failed_payouts.py").CHANGE_PAYOUT)
    op.drop_table("shop_unresolved_payouts")
