"""Idempotent creates, the events every change writes, and payouts at past revisions."""

from __future__ import annotations

import uuid

import grpc
import pytest
from support.payouts import Stub, cancel, confirm, create, mark_paid, refusal

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.world import World


def test_create_with_an_empty_id_gets_a_uuid(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)

    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)

    assert uuid.UUID(payout.payout_id).version == 4


def test_repeated_create_returns_the_payout_unchanged_without_a_second_hold(
    payouts: Stub, world: World
) -> None:
    shop = world.add_shop(funds=10_000)
    payout_id = f"idem-{uuid.uuid4()}"
    first = create(payouts, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id, metadata={"order": "42"})

    again = create(payouts, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id, metadata={"order": "42"})

    assert again == first
    assert world.balance(shop.settlement).min_available_amount == 10_000 - 1_010
    events = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
    assert [e.sequence_id for e in events] == [1]


def test_repeated_create_after_a_change_returns_the_current_payout(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    payout_id = f"idem-{uuid.uuid4()}"
    create(payouts, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id)
    confirmed = confirm(payouts, payout_id)

    assert create(payouts, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id) == confirmed


@pytest.mark.parametrize(
    "difference",
    [
        {"amount": 1_001},
        {"payout_tool_id": "tool-2"},
        {"metadata": {"order": "43"}},
        {"metadata": {}},
    ],
)
def test_create_with_the_same_id_and_other_fields_is_already_exists(
    payouts: Stub, world: World, difference: dict[str, object]
) -> None:
    shop = world.add_shop(funds=10_000)
    payout_id = f"idem-{uuid.uuid4()}"
    original: dict[str, object] = {"amount": 1_000, "payout_tool_id": "", "metadata": {"order": "42"}}
    first = create(payouts, shop.party_id, shop.shop_id, payout_id=payout_id, **original)  # type: ignore[arg-type]
    balance = world.balance(shop.settlement)

    with pytest.raises(grpc.RpcError) as refused:
        create(payouts, shop.party_id, shop.shop_id, payout_id=payout_id, **{**original, **difference})  # type: ignore[arg-type]

    assert refusal(refused.value) == (grpc.StatusCode.ALREADY_EXISTS, "PAYOUT_ALREADY_EXISTS")
    assert payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id)) == first
    assert world.balance(shop.settlement) == balance


def test_same_id_from_another_shop_is_already_exists(payouts: Stub, world: World) -> None:
    shop, other = world.add_shop(funds=10_000), world.add_shop(funds=10_000)
    payout_id = f"idem-{uuid.uuid4()}"
    create(payouts, shop.party_id, shop.shop_id, 1_000, payout_id=payout_id)

    with pytest.raises(grpc.RpcError) as refused:
        create(payouts, other.party_id, other.shop_id, 1_000, payout_id=payout_id)

    assert refusal(refused.value) == (grpc.StatusCode.ALREADY_EXISTS, "PAYOUT_ALREADY_EXISTS")
    assert world.balance(other.settlement).min_available_amount == 10_000


def test_every_change_writes_one_event_with_a_full_snapshot(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    created = create(payouts, shop.party_id, shop.shop_id, 1_000, metadata={"k": "v"})
    paid = mark_paid(payouts, created.payout_id)
    confirmed = confirm(payouts, created.payout_id)
    cancelled = cancel(payouts, created.payout_id, "returned")

    events = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=created.payout_id)).events

    assert [e.sequence_id for e in events] == [1, 2, 3, 4]
    assert len({e.event_id for e in events}) == 4
    assert all(e.payout_id == created.payout_id for e in events)
    assert events[0].payout_change.WhichOneof("change") == "created"
    assert events[0].payout_change.created.payout == created
    assert [e.payout for e in events] == [created, paid, confirmed, cancelled]
    changes = [
        (e.payout_change.status_changed.status, e.payout_change.status_changed.details) for e in events[1:]
    ]
    assert changes == [
        (pb.PAYOUT_STATUS_PAID, ""),
        (pb.PAYOUT_STATUS_CONFIRMED, ""),
        (pb.PAYOUT_STATUS_CANCELLED, "returned"),
    ]
    assert [e.created_at.ToDatetime() for e in events] == sorted(e.created_at.ToDatetime() for e in events)
    assert events[-1].created_at == cancelled.updated_at


def test_events_page_by_after_sequence_id_and_limit(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)
    mark_paid(payouts, payout.payout_id)
    confirm(payouts, payout.payout_id)

    def page(after: int, limit: int) -> list[int]:
        request = pb.GetPayoutEventsRequest(payout_id=payout.payout_id, after_sequence_id=after, limit=limit)
        return [e.sequence_id for e in payouts.GetPayoutEvents(request).events]

    assert page(0, 2) == [1, 2]
    assert page(2, 2) == [3]
    assert page(3, 0) == []


def test_get_payout_at_a_revision_is_the_payout_as_it_was(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    created = create(payouts, shop.party_id, shop.shop_id, 1_000)
    paid = mark_paid(payouts, created.payout_id)
    confirmed = confirm(payouts, created.payout_id)

    def at(revision: int) -> pb.Payout:
        return payouts.GetPayout(pb.GetPayoutRequest(payout_id=created.payout_id, revision=revision))

    assert [at(1), at(2), at(3), at(0)] == [created, paid, confirmed, confirmed]
    with pytest.raises(grpc.RpcError) as refused:
        at(4)
    assert refusal(refused.value) == (grpc.StatusCode.NOT_FOUND, "REVISION_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as negative:
        at(-1)
    assert refusal(negative.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")


def test_no_op_changes_and_refusals_write_no_event(payouts: Stub, world: World) -> None:
    shop = world.add_shop(funds=10_000)
    payout = create(payouts, shop.party_id, shop.shop_id, 1_000)
    confirm(payouts, payout.payout_id)
    confirm(payouts, payout.payout_id)
    with pytest.raises(grpc.RpcError):
        mark_paid(payouts, payout.payout_id)

    events = payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout.payout_id)).events

    assert [e.sequence_id for e in events] == [1, 2]
