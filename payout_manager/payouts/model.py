"""The payout aggregate: its states, its transitions and the events they record.

No I/O here: the service loads a payout, asks it to change, and stores what it recorded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from payout_manager.accounting.rules import PlanStatus
from payout_manager.errors import Reason, Refusal
from payout_manager.payouts.cash_flow import CashFlowPosting


class PayoutStatus(enum.Enum):
    UNPAID = "UNPAID"
    PAID = "PAID"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


# Payouts whose money may still go either way: a shop may have only so many (SPEC 1.1's limit).
UNRESOLVED = frozenset({PayoutStatus.UNPAID, PayoutStatus.PAID})
# How many, unless PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP says otherwise.
DEFAULT_MAX_UNRESOLVED_PER_SHOP = 1000


class FailureCode(enum.Enum):
    """Why the bank or provider did not pay (payout_manager.v1.PayoutFailureCode)."""

    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    NO_ACCOUNT = "NO_ACCOUNT"
    INVALID_ACCOUNT_DETAILS = "INVALID_ACCOUNT_DETAILS"
    DECLINED = "DECLINED"
    COULD_NOT_PROCESS = "COULD_NOT_PROCESS"


@dataclass(frozen=True)
class PayoutFailure:
    code: FailureCode
    details: str = ""


class Accounting(enum.Enum):
    """What a transition does to the payout's posting plan."""

    NONE = "NONE"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"
    REVERT = "REVERT"


# (from, to) -> accounting, exactly the transition table of SPEC 1.1.
TRANSITIONS: dict[tuple[PayoutStatus, PayoutStatus], Accounting] = {
    (PayoutStatus.UNPAID, PayoutStatus.PAID): Accounting.NONE,
    (PayoutStatus.UNPAID, PayoutStatus.CONFIRMED): Accounting.COMMIT,
    (PayoutStatus.PAID, PayoutStatus.CONFIRMED): Accounting.COMMIT,
    (PayoutStatus.UNPAID, PayoutStatus.CANCELLED): Accounting.ROLLBACK,
    (PayoutStatus.PAID, PayoutStatus.CANCELLED): Accounting.ROLLBACK,
    (PayoutStatus.CONFIRMED, PayoutStatus.CANCELLED): Accounting.REVERT,
    (PayoutStatus.UNPAID, PayoutStatus.FAILED): Accounting.ROLLBACK,
    (PayoutStatus.PAID, PayoutStatus.FAILED): Accounting.ROLLBACK,
    (PayoutStatus.CONFIRMED, PayoutStatus.FAILED): Accounting.REVERT,
}


# A payout's plan and its revert plan (None: not made), as its status leaves them.
Books = tuple[PlanStatus, PlanStatus | None]
BooksOfStatus = tuple[PayoutStatus, PlanStatus, PlanStatus | None]


def _books_after(accounting: Accounting, books: Books) -> Books:
    plan, revert = books
    if accounting is Accounting.COMMIT:
        return PlanStatus.COMMITTED, revert
    if accounting is Accounting.ROLLBACK:
        return PlanStatus.ROLLED_BACK, revert
    if accounting is Accounting.REVERT:
        return plan, PlanStatus.COMMITTED  # the revert plan is held and committed at once
    return books


def books_by_status() -> frozenset[BooksOfStatus]:
    """Every (status, plan, revert plan) a payout can be in: from creation, through TRANSITIONS.

    The books audit's rule, derived rather than written again, so a new status or transition
    cannot leave it stale.
    """
    created: BooksOfStatus = (PayoutStatus.UNPAID, PlanStatus.HOLD, None)
    reached = {created}
    frontier = [created]
    while frontier:
        status, plan, revert = frontier.pop()
        for (source, target), accounting in TRANSITIONS.items():
            if source is status:
                after: BooksOfStatus = (target, *_books_after(accounting, (plan, revert)))
                if after not in reached:
                    reached.add(after)
                    frontier.append(after)
    return frozenset(reached)


@dataclass(frozen=True)
class PayoutRequest:
    """What a caller asks for; two creates with one payout id must ask for the same."""

    payout_id: str
    party_id: str
    shop_id: str
    amount: int
    currency: str
    payout_tool_id: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class Payout:
    payout_id: str
    party_id: str
    shop_id: str
    status: PayoutStatus
    created_at: datetime
    updated_at: datetime
    requested_amount: int
    requested_payout_tool_id: str
    payout_tool_id: str
    amount: int
    fee: int
    currency: str
    cash_flow: tuple[CashFlowPosting, ...]
    metadata: Mapping[str, str]
    # The identity of the caller whose create made it (SPEC 5).
    created_by: str
    cancel_details: str = ""
    revision: int = 1
    # Why the bank or provider refused it: set once FAILED.
    failure: PayoutFailure | None = None

    @property
    def plan_id(self) -> str:
        return f"payout_{self.payout_id}"

    @property
    def revert_plan_id(self) -> str:
        return f"revert_payout_{self.payout_id}"

    def was_requested_as(self, request: PayoutRequest) -> bool:
        """Whether `request` repeats the create that made this payout (idempotent replay)."""
        return (
            request.party_id == self.party_id
            and request.shop_id == self.shop_id
            and request.amount == self.requested_amount
            and request.currency == self.currency
            and request.payout_tool_id == self.requested_payout_tool_id
            and dict(request.metadata) == dict(self.metadata)
        )


@dataclass(frozen=True)
class PayoutCreated:
    pass


@dataclass(frozen=True)
class PayoutStatusChanged:
    status: PayoutStatus
    # The cancel details, for a cancellation.
    details: str = ""
    # Why, for a failure.
    failure: PayoutFailure | None = None


PayoutChange = PayoutCreated | PayoutStatusChanged


@dataclass(frozen=True)
class PayoutEvent:
    """One change of one payout, with the payout as it is after the change."""

    payout_id: str
    sequence_id: int
    created_at: datetime
    change: PayoutChange
    payout: Payout
    # Who made the change: a caller's identity, `anonymous`, or `payout-manager:<job>`.
    initiator: str
    event_id: str = field(default="")


def create(
    request: PayoutRequest,
    *,
    payout_tool_id: str,
    amount: int,
    fee: int,
    cash_flow: Sequence[CashFlowPosting],
    now: datetime,
    initiator: str,
) -> tuple[Payout, PayoutEvent]:
    """A new UNPAID payout at revision 1, created by `initiator`, and its `created` event."""
    payout = Payout(
        payout_id=request.payout_id,
        party_id=request.party_id,
        shop_id=request.shop_id,
        status=PayoutStatus.UNPAID,
        created_at=now,
        updated_at=now,
        requested_amount=request.amount,
        requested_payout_tool_id=request.payout_tool_id,
        payout_tool_id=payout_tool_id,
        amount=amount,
        fee=fee,
        currency=request.currency,
        cash_flow=tuple(cash_flow),
        metadata=dict(request.metadata),
        created_by=initiator,
        revision=1,
    )
    return payout, PayoutEvent(payout.payout_id, 1, now, PayoutCreated(), payout, initiator)


@dataclass(frozen=True)
class Transition:
    """The outcome of asking a payout to move to a status."""

    payout: Payout
    accounting: Accounting
    event: PayoutEvent | None

    @property
    def changed(self) -> bool:
        return self.event is not None


def transition(
    payout: Payout,
    target: PayoutStatus,
    *,
    now: datetime,
    initiator: str,
    details: str = "",
    failure: PayoutFailure | None = None,
) -> Transition:
    """`initiator` moves `payout` to `target` by the transition table, or is refused with
    INVALID_PAYOUT_STATUS.

    Asking for the status the payout already has is a no-op: same payout, no event. `details` is
    recorded by a cancellation only, `failure` by a failure only (which needs one).
    """
    if payout.status is target:
        return Transition(payout, Accounting.NONE, None)
    accounting = TRANSITIONS.get((payout.status, target))
    if accounting is None:
        raise Refusal(
            Reason.INVALID_PAYOUT_STATUS,
            f"payout {payout.payout_id} is {payout.status.value}; it cannot become {target.value}",
        )
    details = details if target is PayoutStatus.CANCELLED else ""
    failure = failure if target is PayoutStatus.FAILED else None
    assert (failure is not None) is (target is PayoutStatus.FAILED), "a failure, and only a failure, has one"
    changed = replace(
        payout,
        status=target,
        updated_at=now,
        revision=payout.revision + 1,
        cancel_details=details if target is PayoutStatus.CANCELLED else payout.cancel_details,
        failure=failure,
    )
    event = PayoutEvent(
        payout.payout_id,
        changed.revision,
        now,
        PayoutStatusChanged(target, details, failure),
        changed,
        initiator,
    )
    return Transition(changed, accounting, event)
