"""A payout's life over real gRPC: create, mark paid, confirm, cancel, revert, and their books."""

from __future__ import annotations

import grpc
import pytest
from support.world import World

from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc

Stub = payout_manager_pb2_grpc.PayoutManagementStub


def create(payouts: Stub, party_id: str, shop_id: str, amount: int, **fields: object) -> pb.Payout:
    return payouts.CreatePayout(
        pb.CreatePayoutRequest(
            party_id=party_id, shop_id=shop_id, cash=party_pb.Cash(amount=amount, currency="RUB"), **fields
        )
    )


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
