"""A payout's life over real gRPC: create, mark paid, confirm, cancel, revert, and their books."""

from __future__ import annotations

import grpc
import pytest
from support.payouts import Stub, cancel, confirm, create, fail, mark_paid, refusal, violated_fields

from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.world import World


def test_create_holds_the_cash_flow_and_computes_amount_and_fee(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=100_000)

    payout = create(payouts, shop.party_id, shop.shop_id, 10_000)

    assert payout.status == pb.PAYOUT_STATUS_UNPAID
    assert (payout.amount, payout.fee, payout.currency, payout.revision) == (10_000, 100, "RUB", 1)
    assert payout.payout_tool_id == "tool-1"
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (100_000, 100_000 - 10_100)
    assert world.balance(shop.payout).max_available_amount == 10_000


def test_insufficient_funds_leaves_nothing(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=5_000)

    with pytest.raises(grpc.RpcError) as refused:
        create(payouts, shop.party_id, shop.shop_id, 10_000, payout_id="poor-" + shop.shop_id)

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert world.balance(shop.settlement).min_available_amount == 5_000
    with pytest.raises(grpc.RpcError) as missing:
        payouts.GetPayout(pb.GetPayoutRequest(payout_id="poor-" + shop.shop_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_confirm_commits_the_hold_into_own_amounts(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    system = world.system_settlement()
    system_before = world.balance(system).own_amount
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)

    confirmed = confirm(payouts, payout.payout_id)

    assert (confirmed.status, confirmed.revision) == (pb.PAYOUT_STATUS_CONFIRMED, 2)
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount, settlement.max_available_amount) == (
        50_000 - 20_200,
        50_000 - 20_200,
        50_000 - 20_200,
    )
    assert world.balance(shop.payout).own_amount == 20_000
    assert world.balance(system).own_amount - system_before == 200


def test_cancel_before_confirm_rolls_the_hold_back(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)

    cancelled = cancel(payouts, payout.payout_id, "merchant asked")

    assert (cancelled.status, cancelled.cancel_details, cancelled.revision) == (
        pb.PAYOUT_STATUS_CANCELLED,
        "merchant asked",
        2,
    )
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (50_000, 50_000)
    assert world.balance(shop.payout).max_available_amount == 0


def test_cancel_after_confirm_returns_funds(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    system = world.system_settlement()
    system_before = world.balance(system).own_amount
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)
    confirm(payouts, payout.payout_id)

    reverted = cancel(payouts, payout.payout_id, "bank returned it")

    assert (reverted.status, reverted.revision) == (pb.PAYOUT_STATUS_CANCELLED, 3)
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount, settlement.max_available_amount) == (
        50_000,
        50_000,
        50_000,
    )
    assert world.balance(shop.payout).own_amount == 0
    assert world.balance(system).own_amount == system_before


def test_revert_is_never_refused_for_lack_of_funds(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=20_200)
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)
    confirm(payouts, payout.payout_id)
    # The merchant's payout account has already spent its money elsewhere.
    spend = f"spend-{payout.payout_id}"
    sink = world.account()
    posting = accounter_pb.Posting(from_id=shop.payout, to_id=sink, amount=20_000, currency="RUB")
    world.accounter.Hold(
        accounter_pb.HoldRequest(plan_id=spend, batch=accounter_pb.PostingBatch(id=1, postings=[posting]))
    )
    world.accounter.CommitPlan(accounter_pb.CommitPlanRequest(plan_id=spend))

    reverted = cancel(payouts, payout.payout_id)

    assert reverted.status == pb.PAYOUT_STATUS_CANCELLED
    assert world.balance(shop.payout).own_amount == -20_000
    assert world.balance(shop.settlement).own_amount == 20_200


@pytest.mark.parametrize("paid_first", [False, True], ids=["unpaid", "paid"])
def test_a_failure_before_confirm_rolls_the_hold_back_and_records_its_code(
    payouts: Stub, world: World, paid_first: bool
) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)
    if paid_first:
        mark_paid(payouts, payout.payout_id)

    failed = fail(payouts, payout.payout_id, pb.PAYOUT_FAILURE_CODE_ACCOUNT_CLOSED, "closed on 1 Dec")

    expected_failure = pb.PayoutFailure(code=pb.PAYOUT_FAILURE_CODE_ACCOUNT_CLOSED, details="closed on 1 Dec")
    assert (failed.status, failed.failure, failed.cancel_details) == (
        pb.PAYOUT_STATUS_FAILED,
        expected_failure,
        "",
    )
    assert payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout.payout_id)) == failed
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (50_000, 50_000)
    assert world.balance(shop.payout).max_available_amount == 0
    last = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout.payout_id)).events[-1]
    assert last.sequence_id == failed.revision
    assert last.payout_change.status_changed == pb.PayoutStatusChanged(
        status=pb.PAYOUT_STATUS_FAILED, failure=expected_failure
    )
    assert last.payout == failed


def test_a_failure_after_confirm_reverts_exactly_as_a_cancel_does(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    system = world.system_settlement()
    system_before = world.balance(system).own_amount
    payout = create(payouts, shop.party_id, shop.shop_id, 20_000)
    confirm(payouts, payout.payout_id)

    failed = fail(payouts, payout.payout_id)

    assert (failed.status, failed.revision, failed.failure.code) == (
        pb.PAYOUT_STATUS_FAILED,
        3,
        pb.PAYOUT_FAILURE_CODE_DECLINED,
    )
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount, settlement.max_available_amount) == (
        50_000,
        50_000,
        50_000,
    )
    assert world.balance(shop.payout).own_amount == 0
    assert world.balance(system).own_amount == system_before
    plan = world.accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=f"revert_payout_{payout.payout_id}"))
    assert plan.status == accounter_pb.POSTING_PLAN_STATUS_COMMITTED


def test_failing_a_failed_payout_changes_nothing_and_it_stays_failed(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)
    failed = fail(payouts, payout.payout_id, pb.PAYOUT_FAILURE_CODE_NO_ACCOUNT, "first")

    again = fail(payouts, payout.payout_id, pb.PAYOUT_FAILURE_CODE_DECLINED, "second")

    assert again == failed
    events = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout.payout_id)).events
    assert [e.sequence_id for e in events] == [1, 2]
    for then in (confirm, cancel, mark_paid):
        with pytest.raises(grpc.RpcError) as refused:
            then(payouts, payout.payout_id)
        assert refusal(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_PAYOUT_STATUS")
    assert world.balance(shop.settlement).min_available_amount == 50_000


def test_a_failure_without_a_code_is_invalid_argument_and_changes_nothing(
    payouts: Stub, world: World
) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)

    for request, field in (
        (pb.FailPayoutRequest(payout_id=payout.payout_id), "failure"),
        (
            pb.FailPayoutRequest(payout_id=payout.payout_id, failure=pb.PayoutFailure(details="no code")),
            "failure.code",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            payouts.FailPayout(request)
        assert refusal(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert violated_fields(refused.value) == [field]
    assert (
        payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout.payout_id)).status == pb.PAYOUT_STATUS_UNPAID
    )
    assert world.balance(shop.settlement).min_available_amount == 50_000 - 1_010


def test_mark_paid_then_confirm(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)

    paid = mark_paid(payouts, payout.payout_id)
    assert (paid.status, paid.revision) == (pb.PAYOUT_STATUS_PAID, 2)
    assert world.balance(shop.settlement).min_available_amount == 50_000 - 1_010

    confirmed = confirm(payouts, payout.payout_id)
    assert (confirmed.status, confirmed.revision) == (pb.PAYOUT_STATUS_CONFIRMED, 3)
    assert world.balance(shop.settlement).own_amount == 50_000 - 1_010


def test_repeating_a_transition_changes_nothing_and_adds_no_event(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)
    paid = mark_paid(payouts, payout.payout_id)

    assert mark_paid(payouts, payout.payout_id) == paid
    confirmed = confirm(payouts, payout.payout_id)
    assert confirm(payouts, payout.payout_id) == confirmed
    cancelled = cancel(payouts, payout.payout_id, "first")
    assert cancel(payouts, payout.payout_id, "second") == cancelled

    events = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout.payout_id)).events
    assert [e.sequence_id for e in events] == [1, 2, 3, 4]
    assert world.balance(shop.settlement).own_amount == 50_000


@pytest.mark.parametrize(
    ("path", "then"),
    [
        (["cancel"], "confirm"),
        (["cancel"], "mark_paid"),
        (["confirm"], "mark_paid"),
        (["mark_paid", "confirm"], "mark_paid"),
        (["mark_paid", "cancel"], "mark_paid"),
        (["mark_paid", "cancel"], "confirm"),
        (["cancel"], "fail"),
        (["fail"], "cancel"),
        (["fail"], "confirm"),
        (["fail"], "mark_paid"),
        (["confirm", "fail"], "cancel"),
    ],
)
def test_forbidden_transitions_are_invalid_payout_status(
    payouts: Stub, world: World, path: list[str], then: str
) -> None:
    shop = world.add_shop(funds=50_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)
    calls = {"confirm": confirm, "cancel": cancel, "mark_paid": mark_paid, "fail": fail}
    for step in path:
        calls[step](payouts, payout.payout_id)
    before = payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout.payout_id))
    balance_before = world.balance(shop.settlement)

    with pytest.raises(grpc.RpcError) as refused:
        calls[then](payouts, payout.payout_id)

    assert refusal(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_PAYOUT_STATUS")
    assert payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout.payout_id)) == before
    assert world.balance(shop.settlement) == balance_before


def test_unknown_payout_is_not_found_for_every_call(payouts: Stub) -> None:
    for call in (
        lambda: payouts.GetPayout(pb.GetPayoutRequest(payout_id="no-such-payout")),
        lambda: confirm(payouts, "no-such-payout"),
        lambda: cancel(payouts, "no-such-payout"),
        lambda: mark_paid(payouts, "no-such-payout"),
        lambda: fail(payouts, "no-such-payout"),
        lambda: payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id="no-such-payout")),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refusal(refused.value) == (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")
