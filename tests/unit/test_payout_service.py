"""The payout service's rules against in-memory ports: no database, no network, milliseconds.

The same rules run end to end over gRPC on PostgreSQL in tests/e2e; here each is pinned down alone:
idempotent replay against conflict, the funds refusal, and which accounting each transition does.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from support.fakes import FixedPartyManagement, MemoryStorage

from payout_manager.accounting.rules import PlanStatus
from payout_manager.errors import Reason, Refusal
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting
from payout_manager.payouts.model import PayoutRequest, PayoutStatus
from payout_manager.payouts.service import PayoutService

SETTLEMENT, PAYOUT_ACCOUNT, SYSTEM, FUNDING = 1, 3, 10, 99
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def account(kind: AccountType, account_id: int) -> CashFlowAccount:
    return CashFlowAccount(kind, account_id)


def terms_with_a_fee_of(fee: int) -> FixedPartyManagement:
    """The whole amount to the shop's payout account, and `fee` from its settlement to the system."""

    def postings(amount: int) -> tuple[CashFlowPosting, ...]:
        settlement = account(AccountType.MERCHANT_SETTLEMENT, SETTLEMENT)
        return (
            CashFlowPosting(settlement, account(AccountType.MERCHANT_PAYOUT, PAYOUT_ACCOUNT), amount, "RUB"),
            CashFlowPosting(settlement, account(AccountType.SYSTEM_SETTLEMENT, SYSTEM), fee, "RUB"),
        )

    return FixedPartyManagement(postings)


def request(payout_id: str = "payout-1", amount: int = 1_000) -> PayoutRequest:
    return PayoutRequest(payout_id, "party-1", "shop-1", amount, "RUB", "", {})


@pytest.fixture
def storage() -> MemoryStorage:
    funded = MemoryStorage()
    funded.unit.ledger.own[SETTLEMENT] = 10_000
    funded.unit.ledger.own[FUNDING] = -10_000
    return funded


def service(storage: MemoryStorage, party_management: FixedPartyManagement | None = None) -> PayoutService:
    ids = iter(f"event-{n}" for n in range(1_000))
    return PayoutService(
        storage, party_management or terms_with_a_fee_of(10), clock=lambda: NOW, new_id=lambda: next(ids)
    )


def available(storage: MemoryStorage, account_id: int) -> int:
    return storage.unit.ledger.account(account_id).min_available_amount


def test_a_create_holds_the_cash_flow_and_records_event_1(storage: MemoryStorage) -> None:
    payout = service(storage).create(request())

    assert (payout.status, payout.revision, payout.amount, payout.fee) == (PayoutStatus.UNPAID, 1, 1_000, 10)
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.HOLD
    assert available(storage, SETTLEMENT) == 10_000 - 1_010
    assert [e.sequence_id for e in storage.unit.payouts.stored_events["payout-1"]] == [1]


def test_a_repeated_create_returns_the_payout_and_holds_and_records_nothing_more(
    storage: MemoryStorage,
) -> None:
    payouts = service(storage)
    first = payouts.create(request())

    again = payouts.create(request())

    assert again == first
    assert len(storage.unit.ledger.plans["payout_payout-1"].batches) == 1
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 1
    assert available(storage, SETTLEMENT) == 10_000 - 1_010


@pytest.mark.parametrize(
    "changes",
    [{"amount": 2_000}, {"shop_id": "shop-2"}, {"payout_tool_id": "tool-2"}, {"metadata": {"order": "7"}}],
    ids=["amount", "shop", "tool", "metadata"],
)
def test_a_create_reusing_the_id_of_another_payout_is_already_exists_and_changes_nothing(
    storage: MemoryStorage, changes: dict[str, Any]
) -> None:
    payouts = service(storage)
    payouts.create(request())

    with pytest.raises(Refusal) as refused:
        payouts.create(replace(request(), **changes))

    assert refused.value.reason is Reason.PAYOUT_ALREADY_EXISTS
    assert available(storage, SETTLEMENT) == 10_000 - 1_010
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 1


def test_a_create_the_settlement_account_cannot_fund_leaves_no_hold_payout_or_event(
    storage: MemoryStorage,
) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).create(request(amount=9_995))  # 9 995 + 10 of fee > 10 000

    assert refused.value.reason is Reason.INSUFFICIENT_FUNDS
    assert storage.unit.payouts.payouts == {}
    assert storage.unit.ledger.plans == {}
    assert storage.unit.payouts.stored_events == {}
    assert available(storage, SETTLEMENT) == 10_000


def test_fees_that_leave_nothing_to_pay_out_are_refused_before_anything_is_held(
    storage: MemoryStorage,
) -> None:
    fixed_fee = FixedPartyManagement(
        lambda amount: (
            CashFlowPosting(
                account(AccountType.MERCHANT_SETTLEMENT, SETTLEMENT),
                account(AccountType.MERCHANT_PAYOUT, PAYOUT_ACCOUNT),
                amount,
                "RUB",
            ),
            CashFlowPosting(
                account(AccountType.MERCHANT_PAYOUT, PAYOUT_ACCOUNT),
                account(AccountType.SYSTEM_SETTLEMENT, SYSTEM),
                amount,
                "RUB",
            ),
        )
    )

    with pytest.raises(Refusal) as refused:
        service(storage, fixed_fee).create(request())

    assert refused.value.reason is Reason.INSUFFICIENT_FUNDS
    assert storage.transactions == 0
    assert storage.unit.ledger.plans == {}


def test_confirm_commits_the_plan_moving_the_money(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request())

    confirmed = payouts.confirm("payout-1")

    assert (confirmed.status, confirmed.revision) == (PayoutStatus.CONFIRMED, 2)
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.COMMITTED
    ledger = storage.unit.ledger
    assert (ledger.own[SETTLEMENT], ledger.own[PAYOUT_ACCOUNT], ledger.own[SYSTEM]) == (8_990, 1_000, 10)


def test_cancel_rolls_the_plan_back_releasing_the_hold(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request())

    cancelled = payouts.cancel("payout-1", "changed our mind")

    assert (cancelled.status, cancelled.cancel_details) == (PayoutStatus.CANCELLED, "changed our mind")
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert available(storage, SETTLEMENT) == 10_000


def test_cancel_after_confirm_reverts_with_every_posting_swapped(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request())
    payouts.confirm("payout-1")

    payouts.cancel("payout-1", "returned by the bank")

    plans = storage.unit.ledger.plans
    assert plans["payout_payout-1"].status is PlanStatus.COMMITTED
    assert plans["revert_payout_payout-1"].status is PlanStatus.COMMITTED
    assert plans["revert_payout_payout-1"].nets() == {
        k: -v for k, v in plans["payout_payout-1"].nets().items()
    }
    ledger = storage.unit.ledger
    assert (ledger.own[SETTLEMENT], ledger.own[PAYOUT_ACCOUNT], ledger.own[SYSTEM]) == (10_000, 0, 0)


def test_a_transition_to_the_current_status_records_no_event_and_touches_no_plan(
    storage: MemoryStorage,
) -> None:
    payouts = service(storage)
    payouts.create(request())
    payouts.mark_paid("payout-1")

    again = payouts.mark_paid("payout-1")

    assert (again.status, again.revision) == (PayoutStatus.PAID, 2)
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.HOLD


def test_a_transition_outside_the_table_is_refused_and_changes_nothing(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request())
    payouts.cancel("payout-1", "gone")

    with pytest.raises(Refusal) as refused:
        payouts.confirm("payout-1")

    assert refused.value.reason is Reason.INVALID_PAYOUT_STATUS
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2


def test_a_change_of_an_unknown_payout_is_not_found(storage: MemoryStorage) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).confirm("nobody")

    assert refused.value.reason is Reason.PAYOUT_NOT_FOUND
