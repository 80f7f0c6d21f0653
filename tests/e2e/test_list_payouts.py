"""ListPayouts: filters, newest first, and a stable cursor across pages."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support.payouts import Stub, cancel, confirm, create, fail, refusal

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.world import World


def list_all(payouts: Stub, request: pb.ListPayoutsRequest) -> list[pb.Payout]:
    found: list[pb.Payout] = []
    while True:
        page = payouts.ListPayouts(request)
        found += page.payouts
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def test_pages_cover_every_payout_once_newest_first(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=1_000_000)
    made = [create(payouts, shop.party_id, shop.shop_id, 100 + n) for n in range(23)]

    listed = list_all(
        payouts, pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id, page_size=5)
    )

    assert [p.payout_id for p in listed] == [p.payout_id for p in reversed(made)]


def test_a_payout_created_while_paging_does_not_disturb_the_pages(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=1_000_000)
    made = [create(payouts, shop.party_id, shop.shop_id, 100) for _ in range(6)]
    request = pb.ListPayoutsRequest(party_id=shop.party_id, page_size=3)
    first = payouts.ListPayouts(request)

    create(payouts, shop.party_id, shop.shop_id, 100)
    request.page_token = first.next_page_token
    second = payouts.ListPayouts(request)

    seen = [p.payout_id for p in [*first.payouts, *second.payouts]]
    assert seen == [p.payout_id for p in reversed(made)]
    assert second.next_page_token == ""


def test_each_listed_payout_is_the_payout_as_get_payout_answers_it(payouts: Stub, world: World) -> None:
    # The listing serves each payout's latest event snapshot: after every kind of change, that
    # must be, field by field, the payout GetPayout builds from its row.
    shop = world.add_shop(funds=1_000_000)
    unpaid = create(payouts, shop.party_id, shop.shop_id, 100, metadata={"order": "A-1"})
    paid = payouts.MarkPayoutPaid(
        pb.MarkPayoutPaidRequest(payout_id=create(payouts, shop.party_id, shop.shop_id, 200).payout_id)
    )
    confirmed = confirm(payouts, paid.payout_id)
    reverted = cancel(
        payouts,
        confirm(payouts, create(payouts, shop.party_id, shop.shop_id, 300).payout_id).payout_id,
        "returned",
    )
    failed = fail(payouts, create(payouts, shop.party_id, shop.shop_id, 400).payout_id)

    listed = list_all(payouts, pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id))

    assert [(p.payout_id, p.status) for p in listed] == [
        (failed.payout_id, pb.PAYOUT_STATUS_FAILED),
        (reverted.payout_id, pb.PAYOUT_STATUS_CANCELLED),
        (confirmed.payout_id, pb.PAYOUT_STATUS_CONFIRMED),
        (unpaid.payout_id, pb.PAYOUT_STATUS_UNPAID),
    ]
    assert [p.revision for p in listed] == [2, 3, 3, 1]
    for payout in listed:
        assert payout == payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout.payout_id))


def test_filters_by_status_and_creation_time(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=1_000_000)
    unpaid = create(payouts, shop.party_id, shop.shop_id, 100)
    confirmed = confirm(payouts, create(payouts, shop.party_id, shop.shop_id, 100).payout_id)
    cancelled = cancel(payouts, create(payouts, shop.party_id, shop.shop_id, 100).payout_id)
    failed = fail(payouts, create(payouts, shop.party_id, shop.shop_id, 100).payout_id)
    base = pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id)

    def ids(**fields: object) -> set[str]:
        request = pb.ListPayoutsRequest()
        request.CopyFrom(base)
        for name, value in fields.items():
            if isinstance(value, Timestamp):
                getattr(request, name).CopyFrom(value)
            elif isinstance(value, list):
                getattr(request, name).extend(value)
        return {p.payout_id for p in list_all(payouts, request)}

    assert ids() == {unpaid.payout_id, confirmed.payout_id, cancelled.payout_id, failed.payout_id}
    assert ids(statuses=[pb.PAYOUT_STATUS_CONFIRMED, pb.PAYOUT_STATUS_CANCELLED]) == {
        confirmed.payout_id,
        cancelled.payout_id,
    }
    assert ids(statuses=[pb.PAYOUT_STATUS_FAILED]) == {failed.payout_id}
    assert ids(statuses=[pb.PAYOUT_STATUS_PAID]) == set()
    assert ids(created_from=confirmed.created_at) == {
        confirmed.payout_id,
        cancelled.payout_id,
        failed.payout_id,
    }
    assert ids(created_to=confirmed.created_at) == {unpaid.payout_id}


def test_party_filter_keeps_other_parties_out(payouts: Stub, world: World) -> None:
    shop, other = world.add_shop(funds=10_000), world.add_shop(funds=10_000)
    mine = create(payouts, shop.party_id, shop.shop_id, 100)
    create(payouts, other.party_id, other.shop_id, 100)

    listed = list_all(payouts, pb.ListPayoutsRequest(party_id=shop.party_id))

    assert [p.payout_id for p in listed] == [mine.payout_id]


@pytest.mark.parametrize(
    "request_fields",
    [
        {"page_size": -1},
        {"page_size": 1001},
        {"page_token": "garbage"},
        {"statuses": [pb.PAYOUT_STATUS_UNSPECIFIED]},
        {"statuses": [42]},
    ],
)
def test_bad_listing_requests_are_invalid_argument(payouts: Stub, request_fields: dict[str, object]) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        payouts.ListPayouts(pb.ListPayoutsRequest(**request_fields))  # type: ignore[arg-type]

    code, _ = refusal(refused.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_page_token_is_bound_to_its_filters(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    for _ in range(3):
        create(payouts, shop.party_id, shop.shop_id, 100)
    token = payouts.ListPayouts(pb.ListPayoutsRequest(party_id=shop.party_id, page_size=1)).next_page_token

    with pytest.raises(grpc.RpcError) as refused:
        payouts.ListPayouts(pb.ListPayoutsRequest(party_id="someone-else", page_size=1, page_token=token))

    assert refusal(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
