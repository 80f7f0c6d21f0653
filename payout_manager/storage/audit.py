"""Checks of the books straight from PostgreSQL: what must hold after any mix of calls.

- Double entry: own amounts sum to 0 per currency.
- Every slot agrees with the plans: its own amount is the sum of the nets committed in it, its
  held debit and credit the sums of the nets on hold in it.
- Every payout's plans match its status, and its events run 1..revision with no gap.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from payout_manager.payouts.model import books_by_status
from payout_manager.storage.database import Database, create_database_engine

_UNBALANCED = text(
    """
    SELECT a.currency, sum(s.own_amount) AS total
    FROM account a JOIN account_slot s ON s.account_id = a.id
    GROUP BY a.currency HAVING sum(s.own_amount) <> 0
    ORDER BY a.currency
    """
)

_SLOTS_AGAINST_PLANS = text(
    """
    WITH nets AS (
        SELECT n.account_id, n.slot,
               sum(n.net) FILTER (WHERE p.status = 'COMMITTED') AS own,
               sum(greatest(-n.net, 0)) FILTER (WHERE p.status = 'HOLD') AS debit,
               sum(greatest(n.net, 0)) FILTER (WHERE p.status = 'HOLD') AS credit
        FROM posting_plan_account n JOIN posting_plan p ON p.id = n.plan_id
        GROUP BY n.account_id, n.slot
    )
    SELECT s.account_id, s.slot, s.own_amount, s.held_debit, s.held_credit,
           coalesce(n.own, 0) AS own, coalesce(n.debit, 0) AS debit, coalesce(n.credit, 0) AS credit
    FROM account_slot s FULL JOIN nets n ON n.account_id = s.account_id AND n.slot = s.slot
    WHERE s.account_id IS NULL
       OR (s.own_amount, s.held_debit, s.held_credit)
          IS DISTINCT FROM (coalesce(n.own, 0), coalesce(n.debit, 0), coalesce(n.credit, 0))
    ORDER BY s.account_id, s.slot
    """
)

_PLANS_AGAINST_STATUS = text(
    """
    SELECT p.payout_id, p.status, coalesce(plan.status, '-') AS plan, coalesce(revert.status, '-') AS revert
    FROM payout p
    LEFT JOIN posting_plan plan ON plan.id = 'payout_' || p.payout_id
    LEFT JOIN posting_plan revert ON revert.id = 'revert_payout_' || p.payout_id
    WHERE (CAST(:ids AS text[]) IS NULL OR p.payout_id = ANY(:ids))
      AND (p.status, coalesce(plan.status, '-'), coalesce(revert.status, '-')) NOT IN (
          SELECT * FROM unnest(CAST(:statuses AS text[]), CAST(:plans AS text[]), CAST(:reverts AS text[])))
    ORDER BY p.payout_id
    """
)

_EVENT_GAPS = text(
    """
    SELECT p.payout_id, p.revision, count(e.id) AS events, coalesce(max(e.sequence_id), 0) AS last
    FROM payout p LEFT JOIN payout_event e ON e.payout_id = p.payout_id
    WHERE (CAST(:ids AS text[]) IS NULL OR p.payout_id = ANY(:ids))
    GROUP BY p.payout_id, p.revision
    HAVING count(e.id) <> p.revision OR coalesce(max(e.sequence_id), 0) <> p.revision
       OR coalesce(min(e.sequence_id), 1) <> 1
    ORDER BY p.payout_id
    """
)


# What each status may leave of the payout's plans (UNPAID holds its plan, CONFIRMED committed it,
# a revert committed both, ...), from the transition table; '-' where a plan was never made.
_ALLOWED = sorted(books_by_status(), key=lambda books: [str(part) for part in books])
_ALLOWED_BOOKS = {
    "statuses": [status.value for status, _, _ in _ALLOWED],
    "plans": [plan.value for _, plan, _ in _ALLOWED],
    "reverts": [revert.value if revert else "-" for _, _, revert in _ALLOWED],
}


def unbalanced_currencies(connection: Connection) -> list[tuple[str, int]]:
    """Currencies whose own amounts do not sum to 0 (double entry says: none)."""
    return [(row.currency, int(row.total)) for row in connection.execute(_UNBALANCED)]


def slots_disagreeing_with_plans(connection: Connection) -> list[str]:
    return [
        f"account {row.account_id} slot {row.slot}: own/held debit/held credit are "
        f"{row.own_amount}/{row.held_debit}/{row.held_credit}; its plans say "
        f"{row.own}/{row.debit}/{row.credit}"
        for row in connection.execute(_SLOTS_AGAINST_PLANS)
    ]


def payouts_whose_plans_disagree(
    connection: Connection, payout_ids: Sequence[str] | None = None
) -> list[tuple[str, str, str, str]]:
    """(payout id, status, plan status, revert plan status) of payouts whose plans contradict them."""
    rows = connection.execute(
        _PLANS_AGAINST_STATUS, {"ids": None if payout_ids is None else list(payout_ids), **_ALLOWED_BOOKS}
    )
    return [(row.payout_id, row.status, row.plan, row.revert) for row in rows]


def payouts_with_event_gaps(connection: Connection, payout_ids: Sequence[str] | None = None) -> list[str]:
    rows = connection.execute(_EVENT_GAPS, {"ids": None if payout_ids is None else list(payout_ids)})
    return [
        f"payout {row.payout_id} is at revision {row.revision} but has {row.events} events up to {row.last}"
        for row in rows
    ]


def problems(connection: Connection) -> list[str]:
    """Every way the books do not hold; empty when they do."""
    found = [
        f"{currency} own amounts sum to {total}, not 0"
        for currency, total in unbalanced_currencies(connection)
    ]
    found += slots_disagreeing_with_plans(connection)
    found += [
        f"payout {payout_id} is {status} but its plan is {plan} and its revert plan {revert}"
        for payout_id, status, plan, revert in payouts_whose_plans_disagree(connection)
    ]
    found += payouts_with_event_gaps(connection)
    return found


def audit_books(database_url: str) -> list[str]:
    """Checks the whole database in one repeatable-read snapshot; returns the problems found."""

    def in_one_snapshot(connection: Connection) -> list[str]:
        # A statement, not SQLAlchemy's isolation_level option, which is undone at check-in.
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        return problems(connection)

    database = Database(create_database_engine(database_url, pool_size=1))
    try:
        return database.transaction(in_one_snapshot)
    finally:
        database.dispose()
