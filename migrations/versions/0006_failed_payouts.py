"""FAILED payouts: the bank or provider refused the money (SPEC 1.1), with its failure on the payout

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:00:00

- `payout.status` may be FAILED; `failure_code` and `failure_details` are set exactly when it is.
- `pm_change_payout` stores the failure with the status (a new signature: the old one is dropped,
  and restored on downgrade).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STATUSES = ("UNPAID", "PAID", "CONFIRMED", "CANCELLED", "FAILED")

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
-- new plan p_revert_plan_id) and its event. False, with nothing done, when the payout is no
-- longer at p_revision - 1: the caller read it before a concurrent change and decides again.
BEGIN
    PERFORM FROM payout p
    WHERE p.payout_id = p_payout_id AND p.revision = p_revision - 1 FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
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

OLD_SIGNATURE = (
    "pm_change_payout(text, bigint, text, timestamptz, text, text, text, text,"
    " bigint[], bigint[], bigint[], text[], text[], uuid, bytea)"
)
NEW_SIGNATURE = (
    "pm_change_payout(text, bigint, text, timestamptz, text, text, text, text, text, text,"
    " bigint[], bigint[], bigint[], text[], text[], uuid, bytea)"
)


def _revision_0005() -> ModuleType:
    """Migration 0005's module, whose pm_change_payout a downgrade restores."""
    spec = importlib.util.spec_from_file_location(
        "_revision_0005", Path(__file__).with_name("0005_payout_functions.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_payout_status"), "payout", type_="check")
    op.create_check_constraint(op.f("ck_payout_status"), "payout", f"status IN {statuses!r}")


def upgrade() -> None:
    _status_check(STATUSES)
    op.add_column("payout", sa.Column("failure_code", sa.Text(), nullable=True))
    op.add_column("payout", sa.Column("failure_details", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_payout_failure_when_failed"),
        "payout",
        "(status = 'FAILED') = (failure_code IS NOT NULL AND failure_details IS NOT NULL)",
    )
    op.execute(f"DROP FUNCTION {OLD_SIGNATURE}")
    op.execute(CHANGE_PAYOUT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {NEW_SIGNATURE}")
    op.execute(_revision_0005().CHANGE_PAYOUT)
    op.drop_constraint(op.f("ck_payout_failure_when_failed"), "payout", type_="check")
    op.drop_column("payout", "failure_details")
    op.drop_column("payout", "failure_code")
    _status_check(STATUSES[:-1])
