"""The payout service's rules against in-memory ports: no database, no network, milliseconds.

The same rules run end to end over gRPC on PostgreSQL in tests/e2e; here each is pinned down alone:
idempotent replay against conflict, the funds refusal, and which accounting each transition does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.fakes import FixedPartyManagement, MemoryStorage

from payout_manager.access.caller import ANONYMOUS, Caller
from payout_manager.accounting.rules import Batch, PlanStatus
from payout_manager.errors import Code, Reason, Refusal
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting
from payout_manager.payouts.model import (
    Accounting,
    FailureCode,
    Payout,
    PayoutEvent,
    PayoutFailure,
    PayoutRequest,
    PayoutStatus,
    PayoutStatusChanged,
)
from payout_manager.payouts.ports import PayoutFilter
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
    payout = service(storage).create(request(), ANONYMOUS)

    assert (payout.status, payout.revision, payout.amount, payout.fee) == (PayoutStatus.UNPAID, 1, 1_000, 10)
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.HOLD
    assert available(storage, SETTLEMENT) == 10_000 - 1_010
    assert [e.sequence_id for e in storage.unit.payouts.stored_events["payout-1"]] == [1]


def test_a_repeated_create_returns_the_payout_and_holds_and_records_nothing_more(
    storage: MemoryStorage,
) -> None:
    payouts = service(storage)
    first = payouts.create(request(), ANONYMOUS)

    again = payouts.create(request(), ANONYMOUS)

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
    payouts.create(request(), ANONYMOUS)

    with pytest.raises(Refusal) as refused:
        payouts.create(replace(request(), **changes), ANONYMOUS)

    assert refused.value.reason is Reason.PAYOUT_ALREADY_EXISTS
    assert available(storage, SETTLEMENT) == 10_000 - 1_010
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 1


def test_a_create_the_settlement_account_cannot_fund_leaves_no_hold_payout_or_event(
    storage: MemoryStorage,
) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).create(request(amount=9_995), ANONYMOUS)  # 9 995 + 10 of fee > 10 000

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
        service(storage, fixed_fee).create(request(), ANONYMOUS)

    assert refused.value.reason is Reason.INSUFFICIENT_FUNDS
    assert storage.transactions == 0
    assert storage.unit.ledger.plans == {}


def test_confirm_commits_the_plan_moving_the_money(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)

    confirmed = payouts.confirm("payout-1", ANONYMOUS)

    assert (confirmed.status, confirmed.revision) == (PayoutStatus.CONFIRMED, 2)
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.COMMITTED
    ledger = storage.unit.ledger
    assert (ledger.own[SETTLEMENT], ledger.own[PAYOUT_ACCOUNT], ledger.own[SYSTEM]) == (8_990, 1_000, 10)


def test_cancel_rolls_the_plan_back_releasing_the_hold(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)

    cancelled = payouts.cancel("payout-1", "changed our mind", ANONYMOUS)

    assert (cancelled.status, cancelled.cancel_details) == (PayoutStatus.CANCELLED, "changed our mind")
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert available(storage, SETTLEMENT) == 10_000


def test_cancel_after_confirm_reverts_with_every_posting_swapped(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    payouts.confirm("payout-1", ANONYMOUS)

    payouts.cancel("payout-1", "returned by the bank", ANONYMOUS)

    plans = storage.unit.ledger.plans
    assert plans["payout_payout-1"].status is PlanStatus.COMMITTED
    assert plans["revert_payout_payout-1"].status is PlanStatus.COMMITTED
    assert plans["revert_payout_payout-1"].nets() == {
        k: -v for k, v in plans["payout_payout-1"].nets().items()
    }
    ledger = storage.unit.ledger
    assert (ledger.own[SETTLEMENT], ledger.own[PAYOUT_ACCOUNT], ledger.own[SYSTEM]) == (10_000, 0, 0)


DECLINED = PayoutFailure(FailureCode.DECLINED, "the bank said no")


@pytest.mark.parametrize("paid_first", [False, True], ids=["unpaid", "paid"])
def test_a_failure_before_confirm_rolls_the_plan_back_and_records_its_failure(
    storage: MemoryStorage, paid_first: bool
) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    if paid_first:
        payouts.mark_paid("payout-1", ANONYMOUS)

    failed = payouts.fail("payout-1", DECLINED, ANONYMOUS)

    assert (failed.status, failed.failure, failed.cancel_details) == (PayoutStatus.FAILED, DECLINED, "")
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert "revert_payout_payout-1" not in storage.unit.ledger.plans
    assert available(storage, SETTLEMENT) == 10_000
    assert storage.payout("payout-1") == failed


def test_a_failure_after_confirm_reverts_as_a_cancel_does(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    payouts.confirm("payout-1", ANONYMOUS)

    failed = payouts.fail("payout-1", DECLINED, ANONYMOUS)

    assert (failed.status, failed.revision) == (PayoutStatus.FAILED, 3)
    plans = storage.unit.ledger.plans
    assert plans["revert_payout_payout-1"].status is PlanStatus.COMMITTED
    assert plans["revert_payout_payout-1"].nets() == {
        k: -v for k, v in plans["payout_payout-1"].nets().items()
    }
    ledger = storage.unit.ledger
    assert (ledger.own[SETTLEMENT], ledger.own[PAYOUT_ACCOUNT], ledger.own[SYSTEM]) == (10_000, 0, 0)


def test_failing_a_failed_payout_is_a_no_op_and_a_failed_payout_is_final(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    failed = payouts.fail("payout-1", DECLINED, ANONYMOUS)

    again = payouts.fail("payout-1", PayoutFailure(FailureCode.ACCOUNT_CLOSED, "other"), ANONYMOUS)

    assert again == failed
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2
    changes: list[Callable[[], object]] = [
        lambda: payouts.confirm("payout-1", ANONYMOUS),
        lambda: payouts.cancel("payout-1", "", ANONYMOUS),
        lambda: payouts.mark_paid("payout-1", ANONYMOUS),
    ]
    for change in changes:
        with pytest.raises(Refusal) as refused:
            change()
        assert refused.value.reason is Reason.INVALID_PAYOUT_STATUS
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2


def test_failure_details_past_the_limit_are_invalid_and_change_nothing(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)

    with pytest.raises(Refusal) as refused:
        payouts.fail("payout-1", PayoutFailure(FailureCode.DECLINED, "x" * 1025), ANONYMOUS)

    assert refused.value.reason is Reason.INVALID_REQUEST
    assert [v.field for v in refused.value.violations] == ["failure.details"]
    assert storage.payout("payout-1").status is PayoutStatus.UNPAID  # type: ignore[union-attr]


def test_a_transition_to_the_current_status_records_no_event_and_touches_no_plan(
    storage: MemoryStorage,
) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    payouts.mark_paid("payout-1", ANONYMOUS)

    again = payouts.mark_paid("payout-1", ANONYMOUS)

    assert (again.status, again.revision) == (PayoutStatus.PAID, 2)
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.HOLD


def test_a_transition_outside_the_table_is_refused_and_changes_nothing(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)
    payouts.cancel("payout-1", "gone", ANONYMOUS)

    with pytest.raises(Refusal) as refused:
        payouts.confirm("payout-1", ANONYMOUS)

    assert refused.value.reason is Reason.INVALID_PAYOUT_STATUS
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2


def test_a_change_of_an_unknown_payout_is_not_found(storage: MemoryStorage) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).confirm("nobody", ANONYMOUS)

    assert refused.value.reason is Reason.PAYOUT_NOT_FOUND


# A principal confined to party-2, beside party-1's payout of `request()`.
OTHER_TENANT = Caller("spiffe://bank/party-2-office", frozenset({"party-2"}))


def test_a_confined_caller_cannot_create_for_another_party_and_nothing_is_held(
    storage: MemoryStorage,
) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).create(request(), OTHER_TENANT)

    assert (refused.value.reason, refused.value.code) == (Reason.PARTY_NOT_ALLOWED, Code.PERMISSION_DENIED)
    assert storage.unit.payouts.payouts == {}
    assert storage.unit.ledger.plans == {}


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.get("payout-1", OTHER_TENANT),
        lambda p: p.event("payout-1", 1, OTHER_TENANT),
        lambda p: p.event("payout-1", 7, OTHER_TENANT),
        lambda p: p.events("payout-1", 0, 10, OTHER_TENANT),
        lambda p: p.confirm("payout-1", OTHER_TENANT),
        lambda p: p.cancel("payout-1", "not mine", OTHER_TENANT),
        lambda p: p.mark_paid("payout-1", OTHER_TENANT),
        lambda p: p.fail("payout-1", DECLINED, OTHER_TENANT),
    ],
    ids=["get", "revision", "missing-revision", "events", "confirm", "cancel", "mark-paid", "fail"],
)
def test_another_partys_payout_does_not_exist_for_a_confined_caller(
    storage: MemoryStorage, call: Callable[[PayoutService], object]
) -> None:
    payouts = service(storage)
    payouts.create(request(), ANONYMOUS)

    with pytest.raises(Refusal) as refused:
        call(payouts)

    assert refused.value.reason is Reason.PAYOUT_NOT_FOUND
    # Word for word what a caller hears of a payout that does not exist at all.
    with pytest.raises(Refusal) as nowhere:
        call(service(MemoryStorage()))
    assert str(refused.value) == str(nowhere.value)
    assert storage.unit.payouts.payouts["payout-1"].revision == 1
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.HOLD


def test_a_confined_caller_lists_only_its_parties(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request("mine"), Caller("office", frozenset({"party-1"})))
    storage.unit.ledger.own[SETTLEMENT] += 10_000
    payouts.create(replace(request("theirs"), party_id="party-2"), ANONYMOUS)
    confined = Caller("office", frozenset({"party-1"}))

    def listed(where: PayoutFilter, caller: Caller) -> list[str]:
        return [p.payout_id for p in payouts.list(where, "", 10, caller).payouts]

    assert listed(PayoutFilter(), confined) == ["mine"]
    assert listed(PayoutFilter(party_id="party-2"), confined) == []
    assert listed(PayoutFilter(party_id="party-1"), confined) == ["mine"]
    assert sorted(listed(PayoutFilter(), ANONYMOUS)) == ["mine", "theirs"]


def test_each_event_records_its_caller_and_the_payout_who_created_it(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request(), Caller("back-office"))
    payouts.confirm("payout-1", Caller("treasury"))

    events = storage.unit.payouts.stored_events["payout-1"]
    assert [e.initiator for e in events] == ["back-office", "treasury"]
    assert [e.payout.created_by for e in events] == ["back-office", "back-office"]


# --- expiry (SPEC 1.1) --------------------------------------------------------------------------

TTL = timedelta(hours=1)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ChangedInBetween(MemoryStorage):
    """MemoryStorage where `meanwhile` runs once, after the next change was decided, before it is stored:
    another call's change landing between the read and the store."""

    meanwhile: Callable[[], object] | None = None

    def change(
        self, changed: Payout, event: PayoutEvent, accounting: Accounting, revert: Batch | None
    ) -> bool:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return super().change(changed, event, accounting, revert)


def expiring(storage: MemoryStorage, clock: Clock) -> PayoutService:
    ids = iter(f"event-{n}" for n in range(1_000))
    return PayoutService(storage, terms_with_a_fee_of(10), clock=clock, new_id=lambda: next(ids))


def test_expire_cancels_an_unpaid_payout_older_than_the_ttl_releasing_its_hold(
    storage: MemoryStorage,
) -> None:
    clock = Clock()
    payouts = expiring(storage, clock)
    payouts.create(request(), ANONYMOUS)
    clock.now = NOW + TTL + timedelta(seconds=1)

    expired = payouts.expire("payout-1", TTL)

    assert expired is not None
    assert (expired.status, expired.cancel_details, expired.revision) == (
        PayoutStatus.CANCELLED,
        "expired",
        2,
    )
    assert storage.unit.ledger.plans["payout_payout-1"].status is PlanStatus.ROLLED_BACK
    assert available(storage, SETTLEMENT) == 10_000
    last = storage.unit.payouts.stored_events["payout-1"][-1]
    assert (last.initiator, last.change) == (
        "payout-manager:expiry",
        PayoutStatusChanged(PayoutStatus.CANCELLED, "expired"),
    )


def test_expire_leaves_a_payout_not_older_than_the_ttl(storage: MemoryStorage) -> None:
    clock = Clock()
    payouts = expiring(storage, clock)
    payouts.create(request(), ANONYMOUS)
    clock.now = NOW + TTL

    assert payouts.expire("payout-1", TTL) is None
    assert storage.unit.payouts.payouts["payout-1"].status is PayoutStatus.UNPAID
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 1


@pytest.mark.parametrize(
    ("change", "status", "plan"),
    [
        (lambda p: p.mark_paid("payout-1", ANONYMOUS), PayoutStatus.PAID, PlanStatus.HOLD),
        (lambda p: p.confirm("payout-1", ANONYMOUS), PayoutStatus.CONFIRMED, PlanStatus.COMMITTED),
        (lambda p: p.cancel("payout-1", "gone", ANONYMOUS), PayoutStatus.CANCELLED, PlanStatus.ROLLED_BACK),
    ],
    ids=["paid", "confirmed", "cancelled"],
)
def test_expire_leaves_a_payout_that_is_not_unpaid_however_old(
    storage: MemoryStorage, change: Callable[[PayoutService], object], status: PayoutStatus, plan: PlanStatus
) -> None:
    clock = Clock()
    payouts = expiring(storage, clock)
    payouts.create(request(), ANONYMOUS)
    change(payouts)
    clock.now = NOW + 100 * TTL

    assert payouts.expire("payout-1", TTL) is None
    assert storage.unit.payouts.payouts["payout-1"].status is status
    assert storage.unit.ledger.plans["payout_payout-1"].status is plan
    assert "revert_payout_payout-1" not in storage.unit.ledger.plans
    assert len(storage.unit.payouts.stored_events["payout-1"]) == 2


@pytest.mark.parametrize(
    ("change", "status", "plan", "initiator"),
    [
        (
            lambda p: p.confirm("payout-1", ANONYMOUS),
            PayoutStatus.CONFIRMED,
            PlanStatus.COMMITTED,
            "anonymous",
        ),
        (lambda p: p.mark_paid("payout-1", ANONYMOUS), PayoutStatus.PAID, PlanStatus.HOLD, "anonymous"),
        (
            lambda p: p.cancel("payout-1", "by hand", ANONYMOUS),
            PayoutStatus.CANCELLED,
            PlanStatus.ROLLED_BACK,
            "anonymous",
        ),
        # Another leader's expiry, overlapping this one.
        (
            lambda p: p.expire("payout-1", TTL),
            PayoutStatus.CANCELLED,
            PlanStatus.ROLLED_BACK,
            "payout-manager:expiry",
        ),
    ],
    ids=["confirmed", "marked-paid", "cancelled", "expired"],
)
def test_a_change_landing_between_the_expirys_read_and_store_wins_and_expire_leaves_it(
    change: Callable[[PayoutService], object], status: PayoutStatus, plan: PlanStatus, initiator: str
) -> None:
    storage = ChangedInBetween()
    storage.unit.ledger.own[SETTLEMENT] = 10_000
    clock = Clock()
    payouts = expiring(storage, clock)
    payouts.create(request(), ANONYMOUS)
    clock.now = NOW + TTL + timedelta(seconds=1)
    storage.meanwhile = lambda: change(payouts)

    assert payouts.expire("payout-1", TTL) is None

    assert storage.unit.payouts.payouts["payout-1"].status is status
    assert storage.unit.ledger.plans["payout_payout-1"].status is plan
    # Never a revert of a confirmed payout, never a second cancel.
    assert "revert_payout_payout-1" not in storage.unit.ledger.plans
    events = storage.unit.payouts.stored_events["payout-1"]
    assert [(e.sequence_id, e.initiator) for e in events] == [(1, "anonymous"), (2, initiator)]


def test_a_shop_at_its_limit_of_unresolved_payouts_is_refused_until_one_is_resolved(
    storage: MemoryStorage,
) -> None:
    ids = iter(f"event-{n}" for n in range(100))
    payouts = PayoutService(
        storage,
        terms_with_a_fee_of(10),
        clock=lambda: NOW,
        new_id=lambda: next(ids),
        max_unresolved_per_shop=2,
    )
    payouts.create(request("payout-1"), ANONYMOUS)
    payouts.create(request("payout-2"), ANONYMOUS)
    payouts.mark_paid("payout-2", ANONYMOUS)

    with pytest.raises(Refusal) as refused:
        payouts.create(request("payout-3"), ANONYMOUS)
    assert (refused.value.reason, refused.value.code) == (
        Reason.PAYOUT_LIMIT_EXCEEDED,
        Code.RESOURCE_EXHAUSTED,
    )
    assert storage.payout("payout-3") is None
    assert "payout_payout-3" not in storage.unit.ledger.plans

    payouts.cancel("payout-1", "", ANONYMOUS)
    assert payouts.create(request("payout-3"), ANONYMOUS).status is PayoutStatus.UNPAID


def test_a_quote_tells_what_the_create_would_hold_and_holds_nothing(storage: MemoryStorage) -> None:
    payouts = service(storage)

    enough = payouts.quote(request("", amount=9_990), ANONYMOUS)
    short = payouts.quote(request("", amount=9_991), ANONYMOUS)

    # 9_990 plus the fee of 10 is exactly the 10_000 the settlement account holds.
    assert (enough.amount, enough.fee, enough.available_amount, enough.sufficient) == (
        9_990,
        10,
        10_000,
        True,
    )
    assert (short.available_amount, short.sufficient) == (10_000, False)
    assert storage.unit.ledger.plans == {}
    assert storage.unit.payouts.payouts == {}
    assert storage.transactions == 0
    made = payouts.create(request("payout-1", amount=9_990), ANONYMOUS)
    assert (made.amount, made.fee, made.cash_flow) == (enough.amount, enough.fee, enough.cash_flow)


def test_a_confined_caller_cannot_quote_for_another_party(storage: MemoryStorage) -> None:
    with pytest.raises(Refusal) as refused:
        service(storage).quote(request(""), OTHER_TENANT)

    assert refused.value.reason is Reason.PARTY_NOT_ALLOWED


def fixed_fee_of_the_whole_amount() -> FixedPartyManagement:
    """The whole amount to the payout account, and all of it back out as a fixed fee: nothing left."""
    return FixedPartyManagement(
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


def paid_out_twice() -> FixedPartyManagement:
    """Two payout postings of the amount each: their sum leaves int64 for an amount near its top."""
    settlement = account(AccountType.MERCHANT_SETTLEMENT, SETTLEMENT)
    to_payout = account(AccountType.MERCHANT_PAYOUT, PAYOUT_ACCOUNT)
    return FixedPartyManagement(
        lambda amount: (
            CashFlowPosting(settlement, to_payout, amount, "RUB"),
            CashFlowPosting(settlement, to_payout, amount, "RUB"),
        )
    )


@pytest.mark.parametrize(
    ("party_management", "asked", "reason"),
    [
        (terms_with_a_fee_of(10), request("", amount=0), Reason.INVALID_REQUEST),
        (terms_with_a_fee_of(10), replace(request(""), currency="rub"), Reason.INVALID_REQUEST),
        (terms_with_a_fee_of(10), replace(request(""), party_id=""), Reason.INVALID_REQUEST),
        (
            FixedPartyManagement(lambda _: (), refusal=Refusal(Reason.SHOP_BLOCKED, "shop-1 is blocked")),
            request(""),
            Reason.SHOP_BLOCKED,
        ),
        (fixed_fee_of_the_whole_amount(), request(""), Reason.INSUFFICIENT_FUNDS),
        (paid_out_twice(), request("", amount=2**62), Reason.AMOUNT_OUT_OF_RANGE),
    ],
)
def test_a_quote_is_refused_as_the_create_is_and_neither_holds_anything(
    storage: MemoryStorage, party_management: FixedPartyManagement, asked: PayoutRequest, reason: Reason
) -> None:
    payouts = service(storage, party_management)

    with pytest.raises(Refusal) as quoted:
        payouts.quote(asked, ANONYMOUS)
    with pytest.raises(Refusal) as created:
        payouts.create(asked, ANONYMOUS)

    assert quoted.value.reason is created.value.reason is reason
    assert quoted.value.violations == created.value.violations
    assert storage.transactions == 0
    assert storage.unit.ledger.plans == {}


def test_a_quote_refuses_an_account_the_create_would_not_find_or_in_another_currency(
    storage: MemoryStorage,
) -> None:
    payouts = service(storage)

    storage.unit.ledger.missing.add(SYSTEM)
    with pytest.raises(Refusal) as missing:
        payouts.quote(request(""), ANONYMOUS)
    storage.unit.ledger.missing.clear()
    storage.unit.ledger.currencies[SETTLEMENT] = "USD"
    with pytest.raises(Refusal) as other_currency:
        payouts.quote(request(""), ANONYMOUS)

    assert (missing.value.reason, missing.value.code) == (Reason.ACCOUNT_NOT_FOUND, Code.NOT_FOUND)
    assert (other_currency.value.reason, other_currency.value.code) == (
        Reason.CURRENCY_MISMATCH,
        Code.INVALID_ARGUMENT,
    )
    # Named as pm_hold_new_plan's refusal is named (storage.procedures.refused): the first posting.
    assert [v.field for v in other_currency.value.violations] == ["batch.postings[0].currency"]


def test_a_quote_whose_hold_would_take_a_balance_out_of_int64_is_out_of_range(storage: MemoryStorage) -> None:
    # The settlement account would be debited 2^63 - 1 plus the fee: past int64, as the create's hold.
    with pytest.raises(Refusal) as refused:
        service(storage).quote(request("", amount=2**63 - 1), ANONYMOUS)

    assert (refused.value.reason, refused.value.code) == (Reason.AMOUNT_OUT_OF_RANGE, Code.INVALID_ARGUMENT)


def test_a_quote_answers_a_negative_available_amount_as_insufficient(storage: MemoryStorage) -> None:
    storage.unit.ledger.own[SETTLEMENT] = -500

    quoted = service(storage).quote(request("", amount=1), ANONYMOUS)

    assert (quoted.available_amount, quoted.sufficient) == (-500, False)


def test_a_quote_sees_the_holds_of_earlier_creates(storage: MemoryStorage) -> None:
    payouts = service(storage)
    payouts.create(request("payout-1", amount=4_990), ANONYMOUS)

    enough = payouts.quote(request("", amount=4_990), ANONYMOUS)
    short = payouts.quote(request("", amount=4_991), ANONYMOUS)

    assert (enough.available_amount, enough.sufficient) == (5_000, True)
    assert (short.available_amount, short.sufficient) == (5_000, False)
