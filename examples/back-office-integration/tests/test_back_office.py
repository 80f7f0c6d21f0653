"""What a back office checks of the payout manager: paying out, refusals, and the events."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from payout_manager.proto.party_management.v1.party_management_pb2 import Cash
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.plugin import Books, Stubs
from payout_manager_testing.topic import TopicReader
from payout_manager_testing.world import Shop

NewShop = Callable[..., Shop]


def test_a_payout_is_created_and_confirmed(payout_manager_shop: NewShop, payout_manager_stubs: Stubs) -> None:
    shop = payout_manager_shop(funds=1_000_000)
    payouts = payout_manager_stubs.payouts

    created = payouts.CreatePayout(
        pb.CreatePayoutRequest(
            party_id=shop.party_id, shop_id=shop.shop_id, cash=Cash(amount=10_000, currency="RUB")
        )
    )
    confirmed = payouts.ConfirmPayout(pb.ConfirmPayoutRequest(payout_id=created.payout_id))

    assert created.status == pb.PAYOUT_STATUS_UNPAID
    assert confirmed.status == pb.PAYOUT_STATUS_CONFIRMED
    assert payouts.GetPayout(pb.GetPayoutRequest(payout_id=created.payout_id)) == confirmed


def test_an_underfunded_shop_is_refused(
    payout_manager_shop: NewShop, payout_manager_stubs: Stubs, payout_manager_books: Books
) -> None:
    shop = payout_manager_shop(funds=500)

    with pytest.raises(grpc.RpcError) as refused:
        payout_manager_stubs.payouts.CreatePayout(
            pb.CreatePayoutRequest(
                party_id=shop.party_id, shop_id=shop.shop_id, cash=Cash(amount=10_000, currency="RUB")
            )
        )

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(refused.value).details[0].Unpack(info)
    assert info.reason == "INSUFFICIENT_FUNDS"
    payout_manager_books.assert_balanced()


def test_the_events_of_a_payout_reach_the_topic(
    payout_manager_shop: NewShop, payout_manager_stubs: Stubs, payout_manager_topic: TopicReader
) -> None:
    shop = payout_manager_shop(funds=1_000_000)
    payouts = payout_manager_stubs.payouts
    created = payouts.CreatePayout(
        pb.CreatePayoutRequest(
            party_id=shop.party_id, shop_id=shop.shop_id, cash=Cash(amount=2_500, currency="RUB")
        )
    )
    payouts.CancelPayout(pb.CancelPayoutRequest(payout_id=created.payout_id, details="not today"))

    records = payout_manager_topic.read_events_of({created.payout_id: 2}, timeout=60)

    events = [r.event for r in records if r.key == created.payout_id]
    assert [e.payout_change.WhichOneof("change") for e in events] == ["created", "status_changed"]
    assert events[-1].payout.status == pb.PAYOUT_STATUS_CANCELLED
    assert events[-1].payout.cancel_details == "not today"
