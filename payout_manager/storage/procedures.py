"""The payouts' writes as calls of the stored procedures of migration 0005, on a driver cursor.

Each is one statement in autocommit (`Database.call`): one round trip and one implicit
transaction, with the plans PostgreSQL caches inside the procedure. A refusal the procedure raises
as a SQLSTATE becomes the Refusal of the one error table (`errors.SQLSTATES`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from payout_manager.accounting.rules import Batch
from payout_manager.errors import SQLSTATES, FieldViolation, Reason, Refusal
from payout_manager.events.codec import event_to_proto
from payout_manager.payouts.model import Accounting, Payout, PayoutEvent
from payout_manager.storage.payouts import posting_to_json

T = TypeVar("T")
Cursor = psycopg2.extensions.cursor

# Every argument cast to its parameter's type: a value past bigint is then PostgreSQL's 22003
# (AMOUNT_OUT_OF_RANGE), not a call of a function that does not exist.
_CREATE = (
    "SELECT pm_create_payout(%s::text, %s::text, %s::text, %s::text, %s::bigint, %s::timestamptz,"
    " %s::bigint, %s::text, %s::text, %s::bigint, %s::bigint, %s::text, %s::jsonb, %s::jsonb, %s::text,"
    " %s::text, %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::bigint[], %s::uuid,"
    " %s::bytea, %s::bigint)"
)
_CHANGE = (
    "SELECT pm_change_payout(%s::text, %s::bigint, %s::text, %s::timestamptz, %s::text, %s::text,"
    " %s::text, %s::text, %s::text, %s::text, %s::bigint[], %s::bigint[], %s::bigint[], %s::text[],"
    " %s::text[], %s::uuid, %s::bytea)"
)


def refused(error: psycopg2.Error) -> Refusal | None:
    """The refusal a procedure raised, or None for any other error."""
    reason = SQLSTATES.get(error.pgcode or "")
    if reason is None:
        return None
    if reason is Reason.AMOUNT_OUT_OF_RANGE:
        return Refusal(
            reason,
            "a balance would leave the int64 range of minor units",
            (FieldViolation("batch.postings", "would take an account out of int64"),),
        )
    message = error.diag.message_primary or reason.value
    if reason is Reason.CURRENCY_MISMATCH and error.diag.message_detail:
        position, currency = error.diag.message_detail.split(" ", 1)
        return Refusal(
            reason, message, (FieldViolation(f"batch.postings[{position}].currency", f"must be {currency}"),)
        )
    return Refusal(reason, message)


def _refusing(run: Callable[[], T]) -> T:
    try:
        return run()
    except psycopg2.DatabaseError as error:
        refusal = refused(error)
        if refusal is None:
            raise
        raise refusal from None


def _postings(batch: Batch) -> list[list[int] | list[str]]:
    postings = batch.postings
    return [
        [p.from_id for p in postings],
        [p.to_id for p in postings],
        [p.amount for p in postings],
        [p.currency for p in postings],
        [p.description for p in postings],
    ]


def create_payout(
    cursor: Cursor,
    payout: Payout,
    event: PayoutEvent,
    batch: Batch,
    checked: Collection[int],
    max_unresolved: int,
) -> bool:
    """Stores `payout` holding `batch` and its `event`; False, and nothing done, when it exists.

    Refused with PAYOUT_LIMIT_EXCEEDED when its shop has `max_unresolved` payouts UNPAID or PAID
    already, with INSUFFICIENT_FUNDS when a `checked` account's minimum available amount would fall
    below zero.
    """

    def run() -> bool:
        cursor.execute(
            _CREATE,
            (
                payout.payout_id,
                payout.party_id,
                payout.shop_id,
                payout.status.value,
                payout.revision,
                payout.created_at,
                payout.requested_amount,
                payout.requested_payout_tool_id,
                payout.payout_tool_id,
                payout.amount,
                payout.fee,
                payout.currency,
                json.dumps([posting_to_json(p) for p in payout.cash_flow]),
                json.dumps(dict(payout.metadata)),
                payout.created_by,
                payout.plan_id,
                *_postings(batch),
                sorted(checked),
                event.event_id,
                event_to_proto(event).SerializeToString(),
                max_unresolved,
            ),
        )
        return bool(cursor.fetchone()[0])  # type: ignore[index]

    return _refusing(run)


def change_payout(
    cursor: Cursor, changed: Payout, event: PayoutEvent, accounting: Accounting, revert: Batch | None
) -> bool:
    """Moves the payout to `changed` (its revision, from the one before) with `accounting` and
    `event`; False, and nothing done, when it is no longer at the revision before.

    `revert`: for Accounting.REVERT, the reversed cash flow held and committed in the revert plan.
    """

    def run() -> bool:
        cursor.execute(
            _CHANGE,
            (
                changed.payout_id,
                changed.revision,
                changed.status.value,
                changed.updated_at,
                changed.cancel_details,
                None if changed.failure is None else changed.failure.code.value,
                None if changed.failure is None else changed.failure.details,
                accounting.value,
                changed.plan_id,
                changed.revert_plan_id,
                *_postings(revert or Batch(1, ())),
                event.event_id,
                event_to_proto(event).SerializeToString(),
            ),
        )
        return bool(cursor.fetchone()[0])  # type: ignore[index]

    return _refusing(run)
