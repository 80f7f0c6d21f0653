"""Every event on a three-broker Kafka cluster, whichever broker dies (SPEC 3, issue 15).

Real `serve` processes publish to three real brokers (local_stack.kafka.LocalKafkaCluster, one
process each, on loopback ports); a broker is killed with SIGKILL under load and started again. The
topic the relay creates keeps three replicas and an acknowledgement (acks=all) needs two, so what
the relay cleared from the outbox survives, and the relay goes on with two brokers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from support import books
from support.events import ServedWithStub, Stack, assert_complete_and_ordered, outbox_size
from support.payouts import confirm, create
from support.topics import set_topic_config, topic_configs

from benchmarks.measure import percentile
from local_stack.kafka import LocalKafkaCluster
from payout_manager_testing.load import Load
from payout_manager_testing.topic import Record
from payout_manager_testing.world import Shop

FUNDS = 10**12
# How long the load runs before the kill, with the broker down, and after it is back.
BEFORE, DOWN, AFTER = 4.0, 8.0, 3.0


@pytest.fixture
def stack(postgres_server_url: str, kafka_cluster: LocalKafkaCluster, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka_cluster.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def publishing(stack: Stack, workers: int, shops: int) -> tuple[ServedWithStub, list[Shop], dict[str, int]]:
    """`serve` on the stack, funded shops, and a first payout on the topic (which the relay made)."""
    served = stack.serve(workers=workers)
    funded = [stack.world.add_shop(funds=FUNDS) for _ in range(shops)]
    first = {create(served.payouts, funded[0].party_id, funded[0].shop_id, 1_000).payout_id: 1}
    stack.published(first)
    return served, funded, first


def leaders(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """The node id leading each partition of the topic."""
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(topic, timeout=10)
    return {number: partition.leader for number, partition in metadata.topics[topic].partitions.items()}


def repeats(records: list[Record], expected: dict[str, int]) -> int:
    """How many records of these payouts the topic holds beyond one per event."""
    return sum(1 for record in records if record.key in expected) - sum(expected.values())


@dataclass(frozen=True)
class Window:
    """When a broker went down and when it answered again (time.time())."""

    killed: float
    back: float

    def phase(self, committed: float, appended: float) -> str:
        """ "before": on the topic before the kill; "down": committed before the broker was back and
        appended after the kill (those in flight at the kill included); "after": committed after."""
        if appended < self.killed:
            return "before"
        return "down" if committed < self.back else "after"


def delays_by_phase(
    records: list[Record], expected: dict[str, int], window: Window
) -> dict[str, list[float]]:
    """Seconds from each event's commit (created_at) to its append on the topic (LogAppendTime),
    by `Window.phase`."""
    result: dict[str, list[float]] = {"before": [], "down": [], "after": []}
    for record in records:
        if record.key in expected:
            committed, appended = record.event.created_at.ToMicroseconds() / 1e6, record.timestamp_ms / 1000
            result[window.phase(committed, appended)].append(appended - committed)
    return result


def figures(delays: list[float]) -> str:
    if not delays:
        return "no events"
    ms = [1000 * delay for delay in delays]
    return (
        f"{len(ms):5} events, p50 {statistics.median(ms):7.1f} ms, p99 {percentile(ms, 0.99):7.1f} ms,"
        f" max {max(ms):7.1f} ms"
    )


def test_the_relay_creates_its_topic_with_three_replicas_and_min_insync_replicas_two(
    stack: Stack, kafka_cluster: LocalKafkaCluster
) -> None:
    served, _, _ = publishing(stack, workers=1, shops=1)

    metadata = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}).list_topics(
        stack.topic, timeout=10
    )
    partitions = metadata.topics[stack.topic].partitions.values()
    assert len(partitions) == 12
    assert {len(partition.replicas) for partition in partitions} == {3}
    # The topic's own setting, not the brokers' default of the same value.
    assert topic_configs(kafka_cluster.bootstrap_servers, stack.topic, own=True) == {
        "min.insync.replicas": "2"
    }
    assert "12 partitions, replication factor 3, min.insync.replicas 2" in served.process.output()


def test_a_broker_killed_under_load_and_started_again_loses_no_event_and_repeats_none(
    stack: Stack, kafka_cluster: LocalKafkaCluster
) -> None:
    served, shops, first = publishing(stack, workers=2, shops=4)
    # Each record then carries the time its partition's leader appended it: a stalled delivery shows.
    set_topic_config(kafka_cluster.bootstrap_servers, stack.topic, "message.timestamp.type", "LogAppendTime")
    led = leaders(kafka_cluster.bootstrap_servers, stack.topic)
    # The worst broker to lose: the active controller, when it leads partitions of the topic.
    controller = kafka_cluster.active_controller()
    counts = {node: list(led.values()).count(node) for node in set(led.values())}
    victim = controller if controller in counts else max(counts, key=counts.__getitem__)
    load = Load([served.address], shops, threads=4)
    load.start()
    time.sleep(BEFORE)

    killed = time.time()
    kafka_cluster.kill(kafka_cluster.index_of(victim))
    time.sleep(DOWN)
    restarting = time.time()
    kafka_cluster.restart(kafka_cluster.index_of(victim))
    window = Window(killed, time.time())
    time.sleep(AFTER)
    expected = {**first, **load.stop()}

    assert not load.failures, load.failures[:3]
    records = stack.published(expected, timeout=120)
    delays = delays_by_phase(records, expected, window)
    print(
        f"\nkilled node {victim} (controller {controller}, leading {counts.get(victim, 0)} of 12 partitions)"
        f" for {window.back - killed:.1f} s (its restart took {window.back - restarting:.1f} s);"
        f" {len(expected)} payouts,"
        f" {sum(expected.values())} events, {repeats(records, expected)} repeated"
    )
    for phase, phase_delays in delays.items():
        print(f"  commit to append, committed {phase:6}: {figures(phase_delays)}")
    assert_complete_and_ordered(records, expected, repeats_allowed=False)
    # The very bytes the database holds, in sequence order.
    on_topic: dict[str, list[bytes]] = {}
    for record in records:
        on_topic.setdefault(record.key, []).append(record.value)
    assert {p: on_topic[p] for p in expected} == books.event_payloads(stack.database_url, list(expected))
    # Two brokers were enough: events committed after the kill were on the topic before the restart.
    assert any(
        killed <= record.event.created_at.ToMicroseconds() / 1e6 and record.timestamp_ms / 1000 < restarting
        for record in records
    )


def test_with_two_brokers_down_the_relay_waits_and_once_one_is_back_delivers_everything(
    stack: Stack, kafka_cluster: LocalKafkaCluster
) -> None:
    served, shops, first = publishing(stack, workers=1, shops=1)
    shop = shops[0]

    def confirmed_payouts(count: int) -> dict[str, int]:
        ids = [create(served.payouts, shop.party_id, shop.shop_id, 1_000).payout_id for _ in range(count)]
        for payout_id in ids:
            confirm(served.payouts, payout_id)
        return dict.fromkeys(ids, 2)

    kafka_cluster.kill(0)
    # Two of three brokers: a quorum of controllers, and two in-sync replicas of every partition.
    with_two = confirmed_payouts(20)
    stack.published(with_two, timeout=60)

    kafka_cluster.kill(1)
    with_one = confirmed_payouts(20)
    # One broker alone, with no quorum of controllers, acknowledges nothing (its partitions' other
    # in-sync replica is down), and the relay clears nothing unacknowledged: the events wait.
    time.sleep(3)
    assert outbox_size(stack.database_url) == 40
    kafka_cluster.restart(1)
    expected = {**first, **with_two, **with_one}
    records = stack.published(expected, timeout=120)

    print(f"\n{repeats(records, expected)} events repeated")
    assert_complete_and_ordered(records, expected, repeats_allowed=False)
