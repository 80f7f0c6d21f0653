"""What an analytics team checks: that a payout's state rebuilt from the topic is the service's."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from payout_manager.proto.party_management.v1.party_management_pb2 import Cash
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.plugin import Stubs
from payout_manager_testing.topic import TopicReader
from payout_manager_testing.world import Shop


def rebuild(events: Iterable[pb.Event]) -> pb.Payout:
    """A consumer's view: apply events in sequence order, each once (delivery is at least once)."""
    state, applied = pb.Payout(), 0
    for event in sorted(events, key=lambda e: e.sequence_id):
        if event.sequence_id <= applied:
            continue
        if event.payout_change.WhichOneof("change") == "created":
            state = pb.Payout()
            state.CopyFrom(event.payout_change.created.payout)
        else:
            change = event.payout_change.status_changed
            state.status = change.status
            if change.status == pb.PAYOUT_STATUS_CANCELLED:
                state.cancel_details = change.details
            state.updated_at.CopyFrom(event.created_at)
        state.revision = event.sequence_id
        applied = event.sequence_id
    return state


def test_a_payouts_state_rebuilt_from_the_topic_is_what_get_payout_says(
    payout_manager_shop: Callable[..., Shop], payout_manager_stubs: Stubs, payout_manager_topic: TopicReader
) -> None:
    shop = payout_manager_shop(funds=1_000_000)
    payouts = payout_manager_stubs.payouts
    created = payouts.CreatePayout(
        pb.CreatePayoutRequest(
            party_id=shop.party_id, shop_id=shop.shop_id, cash=Cash(amount=7_000, currency="RUB")
        )
    )
    payouts.MarkPayoutPaid(pb.MarkPayoutPaidRequest(payout_id=created.payout_id))
    payouts.ConfirmPayout(pb.ConfirmPayoutRequest(payout_id=created.payout_id))
    payouts.CancelPayout(pb.CancelPayoutRequest(payout_id=created.payout_id, details="returned by the bank"))

    records = payout_manager_topic.read_events_of({created.payout_id: 4}, timeout=60)
    rebuilt = rebuild(r.event for r in records if r.key == created.payout_id)

    assert rebuilt == payouts.GetPayout(pb.GetPayoutRequest(payout_id=created.payout_id))
