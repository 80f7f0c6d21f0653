"""Every payout change on Kafka, in order per payout, never lost (SPEC 3).

Real `serve` processes publish to a real broker; the tests read the topic in a consumer group, as
the teams downstream do, and compare it with what PostgreSQL holds.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from support import books
from support.events import (
    ServedWithStub,
    Stack,
    assert_complete_and_ordered,
    java_partition,
    outbox_size,
    relay_leaders,
    sequences,
    wait_for_leader,
)
from support.payouts import cancel, confirm, create, mark_paid

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.load import Load

HEADER_NAMES = {"event_id", "content-type", "message-type"}
FUNDS = 10**12


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def wait_until_refused(address: str, timeout: float) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} still accepts connections")
        time.sleep(0.1)


def partitions_of(bootstrap_servers: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


# --- contents -------------------------------------------------------------------------------


def test_each_change_reaches_the_topic_with_its_snapshot_headers_and_key(stack: Stack) -> None:
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=1_000_000)
    stub = served.payouts
    reverted = create(stub, shop.party_id, shop.shop_id, 10_000, metadata={"order": "42"}).payout_id
    mark_paid(stub, reverted)
    confirm(stub, reverted)
    cancel(stub, reverted, "returned by the bank")
    cancelled = create(stub, shop.party_id, shop.shop_id, 20_000).payout_id
    cancel(stub, cancelled, "merchant asked")
    confirmed = create(stub, shop.party_id, shop.shop_id, 30_000).payout_id
    confirm(stub, confirmed)
    expected = {reverted: 4, cancelled: 2, confirmed: 2}

    reader = stack.reader()
    records = [r for r in reader.read_events_of(expected, timeout=60) if r.key in expected]
    reader.close()

    partitions = partitions_of(stack.bootstrap_servers, stack.topic)
    for payout_id, count in expected.items():
        mine = [r for r in records if r.key == payout_id]
        served_events = stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
        assert [r.event for r in mine] == list(served_events)
        assert [r.event.sequence_id for r in mine] == list(range(1, count + 1))
        for record in mine:
            assert record.headers == {
                "event_id": record.event.event_id.encode(),
                "content-type": b"application/x-protobuf",
                "message-type": b"payout_manager.v1.Event",
            }
            assert record.event.payout_id == payout_id
            assert record.event.payout.revision == record.event.sequence_id
        # murmur2_random: the partition a Java producer would pick for this key.
        assert {r.partition for r in mine} == {java_partition(payout_id.encode(), partitions)}

    changes = {
        payout_id: [
            (
                r.event.payout_change.WhichOneof("change"),
                pb.PayoutStatus.Name(r.event.payout.status),
                r.event.payout_change.status_changed.details,
            )
            for r in records
            if r.key == payout_id
        ]
        for payout_id in expected
    }
    assert changes[reverted] == [
        ("created", "PAYOUT_STATUS_UNPAID", ""),
        ("status_changed", "PAYOUT_STATUS_PAID", ""),
        ("status_changed", "PAYOUT_STATUS_CONFIRMED", ""),
        ("status_changed", "PAYOUT_STATUS_CANCELLED", "returned by the bank"),
    ]
    assert changes[cancelled] == [
        ("created", "PAYOUT_STATUS_UNPAID", ""),
        ("status_changed", "PAYOUT_STATUS_CANCELLED", "merchant asked"),
    ]
    assert changes[confirmed] == [
        ("created", "PAYOUT_STATUS_UNPAID", ""),
        ("status_changed", "PAYOUT_STATUS_CONFIRMED", ""),
    ]
    created = next(r.event for r in records if r.key == reverted)
    assert created.payout_change.created.payout == created.payout
    assert created.payout.amount == 10_000 and dict(created.payout.metadata) == {"order": "42"}
    for record in records:
        assert set(record.headers) == HEADER_NAMES


def test_events_wait_in_the_database_and_stay_there_after_publishing(stack: Stack) -> None:
    served = stack.serve(workers=1, env={"PM_KAFKA_BOOTSTRAP_SERVERS": ""})
    shop = stack.world.add_shop(funds=1_000_000)
    payout_id = create(served.payouts, shop.party_id, shop.shop_id, 1_000).payout_id
    confirm(served.payouts, payout_id)
    time.sleep(1)
    assert relay_leaders(stack.database_url) == 0
    assert outbox_size(stack.database_url) == 2
    assert "events wait in the database" in served.process.output()

    publishing = stack.serve(workers=1)
    records = stack.published({payout_id: 2})

    assert sequences(records, [payout_id]) == {payout_id: [1, 2]}
    stored = publishing.payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
    assert [e.sequence_id for e in stored] == [1, 2]


# --- order and completeness -----------------------------------------------------------------


def test_500_payouts_from_concurrent_clients_on_two_servers_arrive_complete_in_order_once(
    stack: Stack,
) -> None:
    first = stack.serve(workers=2)
    second = stack.serve(workers=2)
    shops = [stack.world.add_shop(funds=FUNDS) for _ in range(10)]

    load = Load([first.address, second.address], shops, threads=16)
    expected = load.run(500)

    assert not load.failures, load.failures[:3]
    assert len(expected) == 500
    # Exactly one relay owns the database's events, though two processes run one each.
    assert relay_leaders(stack.database_url) == 1
    records = stack.published(expected, timeout=60)
    assert_complete_and_ordered(records, expected, repeats_allowed=False)
    stored = books.event_payloads(stack.database_url, list(expected))
    on_topic: dict[str, list[bytes]] = {}
    for record in records:
        on_topic.setdefault(record.key, []).append(record.value)
    assert {p: on_topic[p] for p in expected} == stored


def test_a_broker_outage_under_load_loses_nothing(stack: Stack, kafka: TestKafka) -> None:
    served = stack.serve(workers=2)
    shops = [stack.world.add_shop(funds=FUNDS) for _ in range(4)]
    load = Load([served.address], shops, threads=4)
    load.start()
    time.sleep(3)
    with kafka.outage():
        before = load.completed()
        time.sleep(20)
        during = load.completed() - before
    time.sleep(3)
    expected = load.stop()

    assert not load.failures, load.failures[:3]
    # Payouts went on while the broker was away.
    assert during > 20
    records = stack.published(expected, timeout=120)
    assert_complete_and_ordered(records, expected, repeats_allowed=True)
    # The relay waited the broker out (and said so) rather than giving events up.
    assert "has not acknowledged" in served.process.output()


def leader_and_standby_under_load(stack: Stack, *, workers: int) -> tuple[ServedWithStub, Load]:
    """A leading serve and a standby one, both taking creates from 8 client threads."""
    leader = stack.serve(workers=workers)
    wait_for_leader(stack.database_url)
    standby = stack.serve(workers=workers)
    shops = [stack.world.add_shop(funds=FUNDS) for _ in range(4)]
    load = Load([leader.address, standby.address], shops, threads=8)
    load.start()
    return leader, load


def test_a_serve_process_killed_under_load_and_started_again_loses_nothing(stack: Stack) -> None:
    leader, load = leader_and_standby_under_load(stack, workers=2)
    time.sleep(4)

    leader.process.popen.send_signal(signal.SIGKILL)
    leader.process.popen.wait()
    # Its workers follow it: nothing answers on its address for long.
    wait_until_refused(leader.address, timeout=10)
    restarted = stack.serve(workers=2)
    time.sleep(3)
    expected = load.stop()

    assert not load.failures, load.failures[:3]
    # The standby took the relay over, and the restarted process stands by.
    wait_for_leader(stack.database_url, timeout=10)
    records = stack.published(expected, timeout=60)
    assert_complete_and_ordered(records, expected, repeats_allowed=True)
    assert restarted.process.popen.poll() is None


def test_a_graceful_restart_hands_the_relay_over_without_repeats(stack: Stack) -> None:
    leader, load = leader_and_standby_under_load(stack, workers=1)
    time.sleep(3)

    code = leader.close()
    time.sleep(3)
    expected = load.stop()

    assert code == 0, leader.process.output()
    assert not load.failures, load.failures[:3]
    wait_for_leader(stack.database_url, timeout=10)
    records = stack.published(expected, timeout=60)
    # SIGTERM is normal operation: the leader's last batch lands before it lets go.
    assert_complete_and_ordered(records, expected, repeats_allowed=False)
