"""The payout aggregate without I/O: the transition table of SPEC 1.1 and how a cash flow is read."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from payout_manager.accounting.rules import PlanStatus
from payout_manager.errors import Code, Reason, Refusal
from payout_manager.payouts import model
from payout_manager.payouts.cash_flow import (
    AccountType,
    CashFlowAccount,
    CashFlowPosting,
    PayoutSums,
    settlement_accounts,
    sum_payout,
)
from payout_manager.payouts.model import (
    Accounting,
    FailureCode,
    Payout,
    PayoutCreated,
    PayoutFailure,
    PayoutRequest,
    PayoutStatus,
    PayoutStatusChanged,
)

UNPAID, PAID, CONFIRMED, CANCELLED, FAILED = (
    PayoutStatus.UNPAID,
    PayoutStatus.PAID,
    PayoutStatus.CONFIRMED,
    PayoutStatus.CANCELLED,
    PayoutStatus.FAILED,
)
FAILURE = PayoutFailure(FailureCode.ACCOUNT_CLOSED, "the bank closed it on 2026-02-28")

CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = CREATED_AT + timedelta(hours=1)

# SPEC 1.1, written out independently of the production table.
ALLOWED: dict[tuple[PayoutStatus, PayoutStatus], Accounting] = {
    (UNPAID, PAID): Accounting.NONE,
    (UNPAID, CONFIRMED): Accounting.COMMIT,
    (PAID, CONFIRMED): Accounting.COMMIT,
    (UNPAID, CANCELLED): Accounting.ROLLBACK,
    (PAID, CANCELLED): Accounting.ROLLBACK,
    (CONFIRMED, CANCELLED): Accounting.REVERT,
    (UNPAID, FAILED): Accounting.ROLLBACK,
    (PAID, FAILED): Accounting.ROLLBACK,
    (CONFIRMED, FAILED): Accounting.REVERT,
}
ALL_PAIRS = list(itertools.product(PayoutStatus, repeat=2))
SAME = [(status, status) for status in PayoutStatus]
REFUSED = [pair for pair in ALL_PAIRS if pair not in ALLOWED and pair[0] is not pair[1]]


def pair_id(pair: tuple[PayoutStatus, PayoutStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def account(kind: AccountType, account_id: int) -> CashFlowAccount:
    return CashFlowAccount(kind, account_id)


SETTLEMENT = account(AccountType.MERCHANT_SETTLEMENT, 1)
GUARANTEE = account(AccountType.MERCHANT_GUARANTEE, 2)
PAYOUT = account(AccountType.MERCHANT_PAYOUT, 3)
SYSTEM = account(AccountType.SYSTEM_SETTLEMENT, 10)
SUBAGENT = account(AccountType.SYSTEM_SUBAGENT, 11)
INCOME = account(AccountType.EXTERNAL_INCOME, 20)
OUTCOME = account(AccountType.EXTERNAL_OUTCOME, 21)
PROVIDER = account(AccountType.PROVIDER_SETTLEMENT, 30)


def flow(source: CashFlowAccount, destination: CashFlowAccount, amount: int) -> CashFlowPosting:
    return CashFlowPosting(source, destination, amount, "RUB", "")


REQUEST = PayoutRequest(
    payout_id="payout-1",
    party_id="party-1",
    shop_id="shop-1",
    amount=10_000,
    currency="RUB",
    payout_tool_id="",
    metadata={"batch": "7"},
)
CASH_FLOW = (flow(SETTLEMENT, PAYOUT, 10_000), flow(SETTLEMENT, SYSTEM, 100))


def move(payout: Payout, target: PayoutStatus, details: str = "") -> model.Transition:
    """`model.transition` as the service calls it: a failure always with its failure."""
    failure = FAILURE if target is FAILED else None
    return model.transition(
        payout, target, now=NOW, initiator="back-office", details=details, failure=failure
    )


def payout_in(status: PayoutStatus, *, revision: int = 3, cancel_details: str = "") -> Payout:
    created, _ = model.create(
        REQUEST,
        payout_tool_id="tool-1",
        amount=10_000,
        fee=100,
        cash_flow=CASH_FLOW,
        now=CREATED_AT,
        initiator="back-office",
    )
    return replace(created, status=status, revision=revision, cancel_details=cancel_details)


# --- create -----------------------------------------------------------------------------------


def test_create_makes_an_unpaid_payout_at_revision_1_with_its_created_event() -> None:
    payout, event = model.create(
        REQUEST,
        payout_tool_id="tool-1",
        amount=9_900,
        fee=100,
        cash_flow=list(CASH_FLOW),
        now=CREATED_AT,
        initiator="back-office",
    )

    assert (payout.status, payout.revision, payout.created_at, payout.updated_at) == (
        UNPAID,
        1,
        CREATED_AT,
        CREATED_AT,
    )
    assert (payout.amount, payout.fee, payout.currency, payout.cash_flow) == (9_900, 100, "RUB", CASH_FLOW)
    assert (payout.payout_tool_id, payout.requested_payout_tool_id) == ("tool-1", "")
    assert (event.payout_id, event.sequence_id, event.created_at) == ("payout-1", 1, CREATED_AT)
    assert event.change == PayoutCreated()
    assert event.payout == payout


def test_plan_ids_are_named_after_the_payout() -> None:
    payout = payout_in(UNPAID)

    assert (payout.plan_id, payout.revert_plan_id) == ("payout_payout-1", "revert_payout_payout-1")


def test_a_create_repeating_the_first_is_recognised() -> None:
    assert payout_in(CONFIRMED).was_requested_as(replace(REQUEST, metadata=dict(REQUEST.metadata)))


@pytest.mark.parametrize(
    "other",
    [
        replace(REQUEST, party_id="party-2"),
        replace(REQUEST, shop_id="shop-2"),
        replace(REQUEST, amount=10_001),
        replace(REQUEST, currency="USD"),
        replace(REQUEST, payout_tool_id="tool-1"),
        replace(REQUEST, metadata={}),
        replace(REQUEST, metadata={"batch": "8"}),
    ],
    ids=["party", "shop", "amount", "currency", "payout tool", "no metadata", "other metadata"],
)
def test_a_create_differing_from_the_first_is_not_a_repeat(other: PayoutRequest) -> None:
    assert not payout_in(UNPAID).was_requested_as(other)


# --- the transition table ---------------------------------------------------------------------


def test_the_table_covers_every_pair_of_statuses() -> None:
    assert len(ALL_PAIRS) == 25
    assert (len(ALLOWED), len(SAME), len(REFUSED)) == (9, 5, 11)


def test_the_books_each_status_allows_follow_from_the_transition_table() -> None:
    hold, committed, rolled_back = PlanStatus.HOLD, PlanStatus.COMMITTED, PlanStatus.ROLLED_BACK

    # SPEC 1.1's accounting column, walked from a new payout: a confirm commits the plan, a cancel
    # rolls it back, a cancel after a confirm also holds and commits the revert plan.
    assert model.books_by_status() == {
        (UNPAID, hold, None),
        (PAID, hold, None),
        (CONFIRMED, committed, None),
        (CANCELLED, rolled_back, None),
        (CANCELLED, committed, committed),
        (FAILED, rolled_back, None),
        (FAILED, committed, committed),
    }


def test_every_status_is_reachable_from_a_new_payout() -> None:
    assert {status for status, _, _ in model.books_by_status()} == set(PayoutStatus)


@pytest.mark.parametrize("pair", list(ALLOWED), ids=pair_id)
def test_allowed_transition_changes_the_status_with_its_accounting_and_one_event(
    pair: tuple[PayoutStatus, PayoutStatus],
) -> None:
    source, target = pair
    before = payout_in(source, revision=3)

    result = move(before, target)

    failure = FAILURE if target is FAILED else None
    assert result.accounting is ALLOWED[pair]
    assert result.changed
    assert (result.payout.status, result.payout.revision, result.payout.updated_at) == (target, 4, NOW)
    assert result.payout.failure == failure
    assert replace(result.payout, status=source, revision=3, updated_at=CREATED_AT, failure=None) == before
    assert result.event is not None
    assert (result.event.payout_id, result.event.sequence_id, result.event.created_at) == ("payout-1", 4, NOW)
    assert result.event.change == PayoutStatusChanged(target, "", failure)
    assert result.event.payout == result.payout


@pytest.mark.parametrize("source", [UNPAID, PAID, CONFIRMED])
def test_cancel_records_its_details_on_the_payout_and_the_event(source: PayoutStatus) -> None:
    result = model.transition(
        payout_in(source), CANCELLED, now=NOW, initiator="back-office", details="merchant asked"
    )

    assert result.payout.cancel_details == "merchant asked"
    assert result.event is not None
    assert result.event.change == PayoutStatusChanged(CANCELLED, "merchant asked")
    assert result.event.payout.cancel_details == "merchant asked"


@pytest.mark.parametrize("target", [PAID, CONFIRMED, FAILED])
def test_details_of_a_transition_other_than_cancel_are_not_recorded(target: PayoutStatus) -> None:
    result = move(payout_in(UNPAID), target, details="ignored")

    assert result.payout.cancel_details == ""
    assert result.event is not None
    assert result.event.change.details == ""  # type: ignore[union-attr]


@pytest.mark.parametrize("source", [UNPAID, PAID, CONFIRMED])
def test_a_failure_records_its_code_and_details_on_the_payout_and_the_event(source: PayoutStatus) -> None:
    result = move(payout_in(source, cancel_details=""), FAILED)

    assert result.payout.failure == FAILURE
    assert result.event is not None
    assert result.event.change == PayoutStatusChanged(FAILED, "", FAILURE)
    assert result.event.payout.failure == FAILURE


def test_a_failure_is_not_recorded_by_other_transitions() -> None:
    result = model.transition(payout_in(UNPAID), CANCELLED, now=NOW, initiator="back-office", failure=FAILURE)

    assert result.payout.failure is None
    assert result.event is not None
    assert result.event.change == PayoutStatusChanged(CANCELLED, "")


def test_failing_a_failed_payout_again_keeps_the_first_failure() -> None:
    failed = move(payout_in(UNPAID), FAILED).payout
    other = PayoutFailure(FailureCode.DECLINED, "again")

    result = model.transition(failed, FAILED, now=NOW, initiator="back-office", failure=other)

    assert (result.payout, result.event) == (failed, None)
    assert result.payout.failure == FAILURE


@pytest.mark.parametrize("pair", SAME, ids=pair_id)
def test_transition_to_the_current_status_is_a_no_op_without_event(
    pair: tuple[PayoutStatus, PayoutStatus],
) -> None:
    before = payout_in(pair[0], revision=5, cancel_details="first reason")

    result = move(before, pair[1], details="second reason")

    assert result.payout == before
    assert (result.accounting, result.event, result.changed) == (Accounting.NONE, None, False)


@pytest.mark.parametrize("pair", REFUSED, ids=pair_id)
def test_transition_outside_the_table_is_refused(pair: tuple[PayoutStatus, PayoutStatus]) -> None:
    before = payout_in(pair[0])

    with pytest.raises(Refusal) as caught:
        move(before, pair[1])

    assert (caught.value.reason, caught.value.code) == (
        Reason.INVALID_PAYOUT_STATUS,
        Code.FAILED_PRECONDITION,
    )


def test_each_change_takes_the_next_revision() -> None:
    unpaid = payout_in(UNPAID, revision=1)

    paid = model.transition(unpaid, PAID, now=NOW, initiator="back-office")
    confirmed = model.transition(paid.payout, CONFIRMED, now=NOW, initiator="back-office")
    cancelled = model.transition(confirmed.payout, CANCELLED, now=NOW, initiator="back-office")

    revisions = [t.payout.revision for t in (paid, confirmed, cancelled)]
    sequence_ids = [t.event.sequence_id for t in (paid, confirmed, cancelled) if t.event is not None]
    assert revisions == sequence_ids == [2, 3, 4]


# --- sum_payout and settlement_accounts -------------------------------------------------------


def test_sum_of_the_spec_example_with_a_proportional_fee() -> None:
    postings = [flow(SETTLEMENT, PAYOUT, 7_500), flow(SETTLEMENT, SYSTEM, 2_500)]

    assert sum_payout(postings) == PayoutSums(amount=7_500, fee=2_500)


def test_sum_of_the_spec_example_with_a_fixed_fee() -> None:
    postings = [flow(SETTLEMENT, PAYOUT, 5), flow(PAYOUT, SYSTEM, 1), flow(SETTLEMENT, SYSTEM, 1)]

    assert sum_payout(postings) == PayoutSums(amount=4, fee=2)


def test_a_fixed_fee_back_to_the_merchant_settlement_counts_as_a_fixed_fee() -> None:
    postings = [flow(SETTLEMENT, PAYOUT, 100), flow(PAYOUT, SETTLEMENT, 30)]

    assert sum_payout(postings) == PayoutSums(amount=70, fee=30)


def test_postings_of_each_kind_are_summed() -> None:
    postings = [
        flow(SETTLEMENT, PAYOUT, 60),
        flow(SETTLEMENT, PAYOUT, 40),
        flow(SETTLEMENT, SYSTEM, 3),
        flow(SETTLEMENT, SYSTEM, 2),
        flow(PAYOUT, SYSTEM, 10),
        flow(PAYOUT, SETTLEMENT, 20),
    ]

    assert sum_payout(postings) == PayoutSums(amount=70, fee=35)


OTHER_KINDS = [
    (SETTLEMENT, GUARANTEE),
    (GUARANTEE, SETTLEMENT),
    (PAYOUT, OUTCOME),
    (PAYOUT, SUBAGENT),
    (SETTLEMENT, SUBAGENT),
    (SYSTEM, SETTLEMENT),
    (SYSTEM, PAYOUT),
    (SYSTEM, SUBAGENT),
    (INCOME, SETTLEMENT),
    (PROVIDER, SYSTEM),
]


@pytest.mark.parametrize(
    ("source", "destination"), OTHER_KINDS, ids=[f"{s.type.value}->{d.type.value}" for s, d in OTHER_KINDS]
)
def test_postings_of_other_kinds_count_towards_neither_amount_nor_fee(
    source: CashFlowAccount, destination: CashFlowAccount
) -> None:
    postings = [
        flow(SETTLEMENT, PAYOUT, 7_500),
        flow(SETTLEMENT, SYSTEM, 2_500),
        flow(source, destination, 999),
    ]

    assert sum_payout(postings) == PayoutSums(amount=7_500, fee=2_500)


def test_no_postings_sum_to_nothing() -> None:
    assert sum_payout([]) == PayoutSums(amount=0, fee=0)


def test_settlement_accounts_are_the_merchant_settlement_accounts_on_either_side() -> None:
    other_settlement = account(AccountType.MERCHANT_SETTLEMENT, 0)
    postings = [
        flow(SETTLEMENT, PAYOUT, 100),
        flow(SETTLEMENT, SYSTEM, 1),
        flow(PAYOUT, other_settlement, 5),
        flow(GUARANTEE, SYSTEM, 7),
    ]

    assert settlement_accounts(postings) == [0, 1]


def test_a_cash_flow_without_merchant_settlement_has_no_settlement_accounts() -> None:
    assert settlement_accounts([flow(PAYOUT, SYSTEM, 1), flow(INCOME, PROVIDER, 1)]) == []


def test_reversed_posting_swaps_source_and_destination_only() -> None:
    original = CashFlowPosting(SETTLEMENT, PAYOUT, 100, "USD", "payout")

    assert original.reversed() == CashFlowPosting(PAYOUT, SETTLEMENT, 100, "USD", "payout")
