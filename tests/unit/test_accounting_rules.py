"""The ledger's rules without a database: nets, hold, commit, rollback and the batch checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payout_manager.accounting import rules
from payout_manager.accounting.rules import (
    INT64_MAX,
    INT64_MIN,
    MAX_POSTINGS,
    Balance,
    Batch,
    PlanStatus,
    Posting,
)
from payout_manager.errors import Code, Reason, Refusal


def balance(own: int = 0, debit: int = 0, credit: int = 0, *, account_id: int = 1) -> Balance:
    return Balance(account_id, "RUB", own, debit, credit)


def amounts(result: Balance) -> tuple[int, int, int]:
    """(own_amount, min_available_amount, max_available_amount), as the Accounter shows them."""
    return (result.own_amount, result.min_available_amount, result.max_available_amount)


def posting(from_id: int, to_id: int, amount: int, currency: str = "RUB", description: str = "") -> Posting:
    return Posting(from_id, to_id, amount, currency, description)


def refused_fields(plan_id: str, *postings: Posting) -> list[str]:
    """The fields check_batch names when it refuses the batch; it must refuse it."""
    with pytest.raises(Refusal) as caught:
        rules.check_batch(plan_id, Batch(1, postings))
    assert (caught.value.reason, caught.value.code) == (Reason.INVALID_REQUEST, Code.INVALID_ARGUMENT)
    return [violation.field for violation in caught.value.violations]


# --- Balance ----------------------------------------------------------------------------------


def test_available_range_is_own_amount_less_debits_and_plus_credits() -> None:
    assert amounts(balance(own=1_000, debit=300, credit=50)) == (1_000, 700, 1_050)


# --- net_by_account ---------------------------------------------------------------------------


def test_net_debits_the_source_and_credits_the_destination() -> None:
    assert rules.net_by_account([posting(1, 2, 100)]) == {1: -100, 2: 100}


def test_net_sums_every_posting_per_account() -> None:
    postings = [posting(1, 2, 100), posting(2, 3, 30), posting(3, 1, 5), posting(1, 3, 7)]

    assert rules.net_by_account(postings) == {1: -102, 2: 70, 3: 32}


def test_net_of_postings_that_cancel_out_is_zero_for_each_account() -> None:
    assert rules.net_by_account([posting(1, 2, 100), posting(2, 1, 100)]) == {1: 0, 2: 0}


def test_net_of_no_postings_is_empty() -> None:
    assert rules.net_by_account([]) == {}


@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(0, INT64_MAX)).filter(
            lambda p: p[0] != p[1]
        ),
        max_size=30,
    )
)
def test_nets_always_sum_to_zero(triples: list[tuple[int, int, int]]) -> None:
    assert sum(rules.net_by_account(posting(*t) for t in triples).values()) == 0


# --- hold -------------------------------------------------------------------------------------


def test_holding_a_net_debit_lowers_min_available_only() -> None:
    held = rules.hold(balance(own=1_000), 0, -100)

    assert amounts(held) == (1_000, 900, 1_000)
    assert (held.held_debit, held.held_credit) == (100, 0)


def test_holding_a_net_credit_raises_max_available_only() -> None:
    held = rules.hold(balance(own=1_000), 0, 100)

    assert amounts(held) == (1_000, 1_000, 1_100)
    assert (held.held_debit, held.held_credit) == (0, 100)


def test_holding_adds_to_the_holds_of_other_plans() -> None:
    held = rules.hold(balance(own=0, debit=40, credit=60), 0, -100)

    assert (held.held_debit, held.held_credit) == (140, 60)


def test_a_plan_whose_net_grows_holds_the_difference() -> None:
    held = rules.hold(balance(debit=100), -100, -130)

    assert (held.held_debit, held.held_credit) == (130, 0)


def test_a_plan_whose_net_turns_from_debit_to_credit_moves_its_hold_across() -> None:
    held = rules.hold(balance(debit=100, credit=5), -100, 30)

    assert (held.held_debit, held.held_credit) == (0, 35)
    assert amounts(held) == (0, 0, 35)


def test_a_plan_whose_net_returns_to_zero_holds_nothing() -> None:
    held = rules.hold(balance(own=7, debit=0, credit=70), 70, 0)

    assert amounts(held) == (7, 7, 7)


def test_hold_keeps_the_account_and_currency() -> None:
    held = rules.hold(Balance(42, "USD", 0, 0, 0), 0, 10)

    assert (held.account_id, held.currency) == (42, "USD")


def test_hold_up_to_the_int64_edges_is_accepted() -> None:
    assert amounts(rules.hold(balance(), 0, INT64_MAX)) == (0, 0, INT64_MAX)
    assert amounts(rules.hold(balance(own=-1), 0, -INT64_MAX)) == (-1, INT64_MIN, -1)


@pytest.mark.parametrize(
    ("start", "net"),
    [
        pytest.param(balance(own=1), INT64_MAX, id="max_available above int64"),
        pytest.param(balance(credit=INT64_MAX), 1, id="held credit above int64"),
        pytest.param(balance(own=-2), -INT64_MAX, id="min_available below int64"),
        pytest.param(balance(debit=INT64_MAX), -1, id="held debit above int64"),
        pytest.param(balance(), 2 * INT64_MAX, id="net itself above int64"),
    ],
)
def test_hold_leaving_the_int64_range_is_refused(start: Balance, net: int) -> None:
    with pytest.raises(Refusal) as caught:
        rules.hold(start, 0, net)

    assert (caught.value.reason, caught.value.code) == (Reason.AMOUNT_OUT_OF_RANGE, Code.INVALID_ARGUMENT)


# --- check_batch ------------------------------------------------------------------------------


def test_check_batch_accepts_well_formed_postings() -> None:
    rules.check_batch("plan", Batch(1, (posting(1, 2, 100, description="payout"), posting(2, 3, 0, "USD"))))


def test_check_batch_accepts_the_longest_plan_id_and_the_most_postings() -> None:
    rules.check_batch("p" * rules.MAX_PLAN_ID_LENGTH, Batch(1, (posting(1, 2, 1),) * MAX_POSTINGS))


def test_check_batch_refuses_an_empty_batch() -> None:
    assert refused_fields("plan") == ["batch.postings"]


def test_check_batch_refuses_more_than_the_most_postings() -> None:
    assert refused_fields("plan", *(posting(1, 2, 1),) * (MAX_POSTINGS + 1)) == ["batch.postings"]


def test_check_batch_refuses_a_posting_to_its_own_source() -> None:
    assert refused_fields("plan", posting(1, 2, 1), posting(3, 3, 1)) == ["batch.postings[1].to_id"]


def test_check_batch_refuses_a_negative_amount() -> None:
    assert refused_fields("plan", posting(1, 2, -1)) == ["batch.postings[0].amount"]


@pytest.mark.parametrize("currency", ["", "rub", "RU", "RUBL", "R1B", "ÄÖÜ"])
def test_check_batch_refuses_a_malformed_currency(currency: str) -> None:
    assert refused_fields("plan", posting(1, 2, 1, currency)) == ["batch.postings[0].currency"]


@pytest.mark.parametrize(
    "description", ["d" * (rules.MAX_DESCRIPTION_LENGTH + 1), "nul\x00inside"], ids=["too long", "NUL"]
)
def test_check_batch_refuses_a_description_postgresql_cannot_store(description: str) -> None:
    assert refused_fields("plan", posting(1, 2, 1, description=description)) == [
        "batch.postings[0].description"
    ]


@pytest.mark.parametrize(
    "plan_id", ["", "p" * (rules.MAX_PLAN_ID_LENGTH + 1), "plan\x00"], ids=["empty", "too long", "NUL"]
)
def test_check_batch_refuses_a_malformed_plan_id(plan_id: str) -> None:
    assert refused_fields(plan_id, posting(1, 2, 1)) == ["plan_id"]


def test_check_batch_names_every_bad_field_at_once() -> None:
    fields = refused_fields("", posting(1, 1, -5, "usd"), posting(1, 2, 1), posting(2, 3, -1))

    assert fields == [
        "plan_id",
        "batch.postings[0].to_id",
        "batch.postings[0].amount",
        "batch.postings[0].currency",
        "batch.postings[2].amount",
    ]


# --- check_accounts and check_plan_open -------------------------------------------------------


def test_check_accounts_accepts_postings_between_known_accounts_of_their_currency() -> None:
    rules.check_accounts([posting(1, 2, 5)], {1: balance(account_id=1), 2: balance(account_id=2)})


@pytest.mark.parametrize("postings", [[posting(1, 9, 5)], [posting(9, 1, 5)]], ids=["destination", "source"])
def test_check_accounts_refuses_an_unknown_account(postings: list[Posting]) -> None:
    with pytest.raises(Refusal) as caught:
        rules.check_accounts(postings, {1: balance(account_id=1)})

    assert (caught.value.reason, caught.value.code) == (Reason.ACCOUNT_NOT_FOUND, Code.NOT_FOUND)


def test_check_accounts_refuses_a_currency_other_than_the_accounts() -> None:
    known = {1: balance(account_id=1), 2: Balance(2, "USD", 0, 0, 0)}

    with pytest.raises(Refusal) as caught:
        rules.check_accounts([posting(1, 2, 5, "RUB")], known)

    assert (caught.value.reason, caught.value.code) == (Reason.CURRENCY_MISMATCH, Code.INVALID_ARGUMENT)
    assert [v.field for v in caught.value.violations] == ["batch.postings[0].currency"]


def test_an_open_plan_takes_more_holds() -> None:
    rules.check_plan_open("plan", PlanStatus.HOLD)


@pytest.mark.parametrize("status", [PlanStatus.COMMITTED, PlanStatus.ROLLED_BACK])
def test_a_finished_plan_takes_no_more_holds(status: PlanStatus) -> None:
    with pytest.raises(Refusal) as caught:
        rules.check_plan_open("plan", status)

    assert (caught.value.reason, caught.value.code) == (Reason.INVALID_PLAN_STATE, Code.FAILED_PRECONDITION)
