"""The relay's rules: what leaves the outbox after a batch (per payout, the delivered events before
the first gap), the headers, the holds of refused payouts and the replication of a new topic."""

from __future__ import annotations

from payout_manager.events.relay import Holds, headers, topic_replication
from payout_manager.events.relay import acknowledged as cleared
from payout_manager.storage.outbox import PendingEvent


def pending(row_id: int, payout_id: str, sequence_id: int) -> PendingEvent:
    return PendingEvent(row_id, f"event-{row_id}", payout_id, f"{payout_id}:{sequence_id}".encode())


def acknowledged(batch: list[PendingEvent], delivered: set[int]) -> list[int]:
    """The row ids of the events that may leave the outbox."""
    return [event.row_id for event in cleared(batch, delivered)]


BATCH = [pending(1, "a", 1), pending(2, "b", 1), pending(3, "a", 2), pending(4, "a", 3), pending(5, "b", 2)]


def test_everything_delivered_is_cleared() -> None:
    assert acknowledged(BATCH, {1, 2, 3, 4, 5}) == [1, 2, 3, 4, 5]


def test_nothing_delivered_clears_nothing() -> None:
    assert acknowledged(BATCH, set()) == []


def test_an_undelivered_event_keeps_its_payouts_later_ones_even_if_they_arrived() -> None:
    assert acknowledged(BATCH, {1, 2, 4, 5}) == [1, 2, 5]


def test_one_payouts_gap_does_not_hold_back_another() -> None:
    assert acknowledged(BATCH, {3, 4, 5}) == []
    assert acknowledged(BATCH, {1, 3, 4}) == [1, 3, 4]


def test_headers_are_the_three_of_the_spec() -> None:
    assert headers(pending(7, "a", 1)) == [
        ("event_id", b"event-7"),
        ("content-type", b"application/x-protobuf"),
        ("message-type", b"payout_manager.v1.Event"),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_refused_payout_waits_its_own_backoff_doubling_to_the_maximum() -> None:
    clock = Clock()
    holds = Holds(clock)

    waits = [holds.refused("a") for _ in range(7)]

    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert not holds.ready("a")
    assert holds.ready("b")
    clock.now += 5.0
    assert holds.ready("a")


def test_a_published_payout_is_no_longer_held_and_starts_its_backoff_afresh() -> None:
    holds = Holds(Clock())
    holds.refused("a")
    holds.refused("a")

    holds.published("a")

    assert holds.ready("a") and len(holds) == 0
    assert holds.refused("a") == 0.2


def test_a_new_topic_has_three_replicas_two_in_sync_where_three_brokers_answer_else_one_per_broker() -> None:
    assert topic_replication(5) == (3, {"min.insync.replicas": "2"})
    assert topic_replication(3) == (3, {"min.insync.replicas": "2"})
    assert topic_replication(2) == (2, {})
    assert topic_replication(1) == (1, {})
    # No metadata's brokers: the create asks for one replica, and the broker says what is wrong.
    assert topic_replication(0) == (1, {})
