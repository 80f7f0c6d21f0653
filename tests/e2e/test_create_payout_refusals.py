"""CreatePayout refusals: PartyManagement's passed on, the payout's own, and none changes a balance."""

from __future__ import annotations

import grpc
import pytest
from support.payouts import Stub, create, refusal

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.world import PLAIN_TERMS, World


def test_party_management_refusals_are_passed_on(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    blocked_party = world.add_shop(funds=10_000, party_blocked=True)
    blocked_shop = world.add_shop(funds=10_000, shop_blocked=True)
    cases = [
        (("no-such-party", shop.shop_id, ""), (grpc.StatusCode.NOT_FOUND, "PARTY_NOT_FOUND")),
        ((shop.party_id, "no-such-shop", ""), (grpc.StatusCode.NOT_FOUND, "SHOP_NOT_FOUND")),
        ((shop.party_id, shop.shop_id, "nope"), (grpc.StatusCode.NOT_FOUND, "PAYOUT_TOOL_NOT_FOUND")),
        (
            (blocked_party.party_id, blocked_party.shop_id, ""),
            (grpc.StatusCode.FAILED_PRECONDITION, "PARTY_BLOCKED"),
        ),
        (
            (blocked_shop.party_id, blocked_shop.shop_id, ""),
            (grpc.StatusCode.FAILED_PRECONDITION, "SHOP_BLOCKED"),
        ),
    ]
    for (party_id, shop_id, payout_tool_id), expected in cases:
        with pytest.raises(grpc.RpcError) as refused:
            create(payouts, party_id, shop_id, 1_000, payout_tool_id=payout_tool_id)
        assert refusal(refused.value) == expected
    for account in (shop, blocked_party, blocked_shop):
        assert world.balance(account.settlement).min_available_amount == 10_000


def test_a_currency_other_than_the_shops_is_refused(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)

    with pytest.raises(grpc.RpcError) as refused:
        payouts.CreatePayout(
            pb.CreatePayoutRequest(
                party_id=shop.party_id, shop_id=shop.shop_id, cash=party_pb.Cash(amount=100, currency="USD")
            )
        )

    assert refusal(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")


def test_fees_that_eat_the_whole_amount_are_insufficient_funds(payouts: Stub, world: World) -> None:
    terms = [
        *PLAIN_TERMS,
        {
            "source": "merchant.payout",
            "destination": "system.settlement",
            "volume": {"fixed": 500},
            "details": "fixed",
        },
    ]
    shop = world.add_shop(funds=10_000, terms=terms)

    with pytest.raises(grpc.RpcError) as refused:
        create(payouts, shop.party_id, shop.shop_id, 500)

    assert refusal(refused.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert world.balance(shop.settlement).min_available_amount == 10_000


def test_a_fixed_fee_from_the_payout_account_is_taken_from_the_amount(payouts: Stub, world: World) -> None:
    terms = [
        *PLAIN_TERMS,
        {
            "source": "merchant.payout",
            "destination": "system.settlement",
            "volume": {"fixed": 30},
            "details": "fixed",
        },
    ]
    shop = world.add_shop(funds=10_000, terms=terms)

    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)

    assert (payout.amount, payout.fee) == (970, 30)
    assert world.balance(shop.settlement).min_available_amount == 9_000


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"party_id": ""}, "party_id"),
        ({"shop_id": ""}, "shop_id"),
        ({"amount": 0}, "cash.amount"),
        ({"amount": -5}, "cash.amount"),
        ({"currency": "rub"}, "cash.currency"),
        ({"currency": "RUBL"}, "cash.currency"),
        ({"payout_id": "x" * 65}, "payout_id"),
        ({"metadata": {f"k{n}": "v" for n in range(33)}}, "metadata"),
        ({"metadata": {"k": "v" * 257}}, "metadata['k']"),
    ],
)
def test_invalid_create_requests_name_the_bad_field(
    payouts: Stub, world: World, fields: dict[str, object], field: str
) -> None:
    shop = world.add_shop(funds=10_000)
    request: dict[str, object] = {
        "party_id": shop.party_id,
        "shop_id": shop.shop_id,
        "amount": 100,
        "currency": "RUB",
    }
    request.update(fields)
    cash = party_pb.Cash(amount=request.pop("amount"), currency=request.pop("currency"))  # type: ignore[arg-type]

    with pytest.raises(grpc.RpcError) as refused:
        payouts.CreatePayout(pb.CreatePayoutRequest(cash=cash, **request))  # type: ignore[arg-type]

    assert refusal(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(refused.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    assert field in [v.field for v in bad_request.field_violations]
    assert world.balance(shop.settlement).min_available_amount == 10_000
