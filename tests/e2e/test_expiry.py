"""Expiry of UNPAID payouts (SPEC 1.1): real `serve` processes with PM_UNPAID_PAYOUT_TTL on one database.

Each test has a stack of its own (database, PartyManagement, topic), so every expiry it sees is
made by its own `serve` processes; the tests prove outcomes (statuses, events, balances, the
books audit, the topic), and print the figures of the backlog.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg2
import pytest
from support.books import dsn
from support.events import Stack, outbox_size, relay_leaders, wait_for_empty_outbox
from support.expired import preload_unpaid, statuses
from support.faults import restart_postgres
from support.metrics import scrape, value
from support.payouts import Stub, confirm, create, mark_paid, refusal
from support.repeated import Repeated

from benchmarks.limits import UNLIMITED
from payout_manager import expiry
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.storage.audit import audit_books
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.postgres import scratch_postgres
from payout_manager_testing.processes import free_port
from payout_manager_testing.world import Shop

TTL = 2
# SPEC 1.1: cancelled within a minute of its expiry.
WITHIN = 60.0
EXPIRY = "payout-manager:expiry"
# 1000 paid out plus the SPEC terms' 1% fee.
PAYOUT = 1_000
COST = 1_010
EXPIRED_COUNTER = "pm_payouts_expired_total"
# The backlog test's size; the figure is 100 000 (PM_TEST_EXPIRY_BACKLOG=100000).
BACKLOG = int(os.environ.get("PM_TEST_EXPIRY_BACKLOG", "5000"))
# Preloaded payouts per shop: well under the per-shop limit of unresolved payouts.
PER_SHOP = 500


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def expiring(ttl: int = TTL, **more: str) -> dict[str, str]:
    return {"PM_UNPAID_PAYOUT_TTL": str(ttl), **more}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Waits until `condition()` holds; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def status(stub: Stub, payout_id: str) -> int:
    return stub.GetPayout(pb.GetPayoutRequest(payout_id=payout_id)).status


def all_in(stub: Stub, payout_ids: Sequence[str], wanted: int) -> Callable[[], bool]:
    return lambda: all(status(stub, payout_id) == wanted for payout_id in payout_ids)


def events(stub: Stub, payout_id: str) -> list[pb.Event]:
    return list(stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events)


def assert_expired_once(stub: Stub, payout: pb.Payout) -> timedelta:
    """The payout was cancelled by the expiry alone, once, after its TTL: how long after."""
    stored = events(stub, payout.payout_id)
    assert [e.sequence_id for e in stored] == [1, 2], payout.payout_id
    cancel = stored[1]
    assert cancel.initiator == EXPIRY
    change = cancel.payout_change.status_changed
    assert (change.status, change.details) == (pb.PAYOUT_STATUS_CANCELLED, "expired")
    assert cancel.payout.cancel_details == "expired"
    late = cancel.created_at.ToDatetime(UTC) - (payout.created_at.ToDatetime(UTC) + timedelta(seconds=TTL))
    # Never before its time, and within the minute.
    assert timedelta(0) < late < timedelta(seconds=WITHIN), payout.payout_id
    return late


def test_unpaid_payouts_past_the_ttl_are_cancelled_as_expired_within_the_minute_releasing_their_holds(
    stack: Stack,
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    served = stack.serve(workers=1, env=expiring(PM_METRICS_ADDRESS=metrics))
    shop = stack.world.add_shop(funds=100 * COST)
    stub = served.payouts
    unpaid = [create(stub, shop.party_id, shop.shop_id, PAYOUT) for _ in range(5)]
    paid = [create(stub, shop.party_id, shop.shop_id, PAYOUT) for _ in range(3)]
    for payout in paid:
        mark_paid(stub, payout.payout_id)

    wait_for(all_in(stub, [p.payout_id for p in unpaid], pb.PAYOUT_STATUS_CANCELLED), WITHIN, "expired")
    young = create(stub, shop.party_id, shop.shop_id, PAYOUT)

    late = [assert_expired_once(stub, payout) for payout in unpaid]
    for payout in paid:
        assert status(stub, payout.payout_id) == pb.PAYOUT_STATUS_PAID
        assert [e.sequence_id for e in events(stub, payout.payout_id)] == [1, 2]
    assert status(stub, young.payout_id) == pb.PAYOUT_STATUS_UNPAID
    # The expired payouts' holds are released; the PAID ones and the young one still hold theirs.
    settlement = stack.world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (100 * COST, 96 * COST)
    assert value(scrape(metrics), EXPIRED_COUNTER) == len(unpaid)
    expected = {p.payout_id: 2 for p in unpaid + paid} | {young.payout_id: 1}
    on_topic = [r for r in stack.published(expected) if r.key in expected]
    for payout in unpaid:
        mine = [r.event for r in on_topic if r.key == payout.payout_id]
        assert [(e.sequence_id, e.initiator) for e in mine] == [(1, "anonymous"), (2, EXPIRY)]
    assert audit_books(stack.database_url) == []
    print(f"\nexpired {max(late).total_seconds():.1f} s after the TTL at most")


def test_two_serve_processes_expire_each_payout_exactly_once_and_a_standby_takes_over(
    stack: Stack,
) -> None:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    servers = [stack.serve(workers=2, env=expiring(PM_METRICS_ADDRESS=address)) for address in addresses]
    shop = stack.world.add_shop(funds=100 * COST)
    first = [create(servers[n % 2].payouts, shop.party_id, shop.shop_id, PAYOUT) for n in range(40)]

    wait_for(
        all_in(servers[0].payouts, [p.payout_id for p in first], pb.PAYOUT_STATUS_CANCELLED), WITHIN, "first"
    )
    assert relay_leaders(stack.database_url, expiry.LEADER_LOCK_KEY) == 1
    leading = [n for n, served in enumerate(servers) if "expiry: leading" in served.process.output()]
    assert len(leading) == 1
    leader, standby = servers[leading[0]], servers[1 - leading[0]]
    by_leader = value(scrape(addresses[leading[0]]), EXPIRED_COUNTER)
    leader.close()
    second = [create(standby.payouts, shop.party_id, shop.shop_id, PAYOUT) for _ in range(20)]

    wait_for(
        all_in(standby.payouts, [p.payout_id for p in second], pb.PAYOUT_STATUS_CANCELLED), WITHIN, "second"
    )
    assert "expiry: leading" in standby.process.output()
    every = first + second
    for payout in every:
        assert_expired_once(standby.payouts, payout)
    # Each payout counted by the one process that cancelled it.
    assert by_leader + value(scrape(addresses[1 - leading[0]]), EXPIRED_COUNTER) == len(every)
    # The stack's world may have talked to the stopped leader: asked of the standby.
    settlement = accounter_pb2_grpc.AccounterStub(standby.channel).GetAccount(
        accounter_pb.GetAccountRequest(account_id=shop.settlement)
    )
    assert (settlement.own_amount, settlement.min_available_amount) == (100 * COST, 100 * COST)
    # The topic agrees: each payout's one cancel, under the one event id stored (repeats of a
    # delivery carry the same id).
    expected = {p.payout_id: 2 for p in every}
    on_topic = [r for r in stack.published(expected) if r.key in expected]
    for payout in every:
        stored = events(standby.payouts, payout.payout_id)[1]
        cancels = {
            r.event.event_id for r in on_topic if r.key == payout.payout_id and r.event.sequence_id == 2
        }
        assert cancels == {stored.event_id}
    assert audit_books(stack.database_url) == []


def test_a_confirm_racing_the_expiry_ends_in_exactly_one_of_the_two_serial_orders(stack: Stack) -> None:
    served = stack.serve(workers=2, env=expiring())
    shop = stack.world.add_shop(funds=100 * COST)
    stub = served.payouts
    made = [create(stub, shop.party_id, shop.shop_id, PAYOUT) for _ in range(60)]

    def confirm_about_its_expiry(payout: pb.Payout) -> str:
        # Spread around its expiry and the expiry's next look (every POLL_INTERVAL).
        offset = random.uniform(TTL - 1, TTL + expiry.POLL_INTERVAL + 1)
        time.sleep(max(0.0, payout.created_at.ToDatetime(UTC).timestamp() + offset - time.time()))
        try:
            confirm(stub, payout.payout_id)
        except grpc.RpcError as error:
            code, reason = refusal(error)
            return f"{code.name}/{reason}"
        return "OK"

    with ThreadPoolExecutor(len(made)) as pool:
        results = list(pool.map(confirm_about_its_expiry, made))

    for payout, result in zip(made, results, strict=True):
        stored = events(stub, payout.payout_id)
        changes = [(e.payout.status, e.initiator) for e in stored]
        if result == "OK":
            # Confirm first: committed; the expiry found it CONFIRMED and left it.
            assert changes == [
                (pb.PAYOUT_STATUS_UNPAID, "anonymous"),
                (pb.PAYOUT_STATUS_CONFIRMED, "anonymous"),
            ]
        else:
            # Expiry first: cancelled, and the confirm refused.
            assert result == "FAILED_PRECONDITION/INVALID_PAYOUT_STATUS"
            assert_expired_once(stub, payout)
    outcomes = Counter(results)
    print(f"\nconfirms racing the expiry: {dict(outcomes)}")
    assert set(outcomes) == {"OK", "FAILED_PRECONDITION/INVALID_PAYOUT_STATUS"}
    confirmed = outcomes["OK"]
    settlement = stack.world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (
        (100 - confirmed) * COST,
        (100 - confirmed) * COST,
    )
    assert audit_books(stack.database_url) == []


def test_the_expiry_rides_out_a_database_restart_and_serve_keeps_serving(
    kafka: TestKafka, tmp_path: Path
) -> None:
    # A PostgreSQL of this test's alone, so that restarting it troubles no other test.
    with scratch_postgres("pm-test-expiry-") as postgres:
        stack = Stack(postgres.url, kafka.bootstrap_servers, tmp_path)
        try:
            served = stack.serve(workers=1, env=expiring())
            shop = stack.world.add_shop(funds=100 * COST)
            stub = served.payouts
            before = [create(stub, shop.party_id, shop.shop_id, PAYOUT) for _ in range(3)]
            wait_for(
                all_in(stub, [p.payout_id for p in before], pb.PAYOUT_STATUS_CANCELLED), WITHIN, "before"
            )

            restart_postgres(postgres)
            after = [created_once_the_database_answers(stub, shop) for _ in range(3)]

            wait_for(all_in(stub, [p.payout_id for p in after], pb.PAYOUT_STATUS_CANCELLED), WITHIN, "after")
            for payout in before + after:
                assert_expired_once(stub, payout)
            assert served.process.popen.poll() is None
            assert "expiry: database lost" in served.process.output()
            assert audit_books(stack.database_url) == []
        finally:
            stack.close()


def created_once_the_database_answers(stub: Stub, shop: Shop) -> pb.Payout:
    """A create, retried while the service answers UNAVAILABLE (its pool meeting the restart)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return create(stub, shop.party_id, shop.shop_id, PAYOUT, timeout=10)
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- a backlog ----------------------------------------------------------------------------------


class Creates(Repeated):
    """Creates on one shop at a steady pace, each one's latency kept: `run_for` here, or on a
    thread for the `with` block."""

    PACE = 0.05

    def __init__(self, stub: Stub, shop: Shop) -> None:
        super().__init__(self.PACE)
        self._stub, self._shop = stub, shop
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run_for(self, count: int) -> Creates:
        for _ in range(count):
            self._tick()
            time.sleep(self.PACE)
        return self

    def _tick(self) -> None:
        start = time.monotonic()
        try:
            create(self._stub, self._shop.party_id, self._shop.shop_id, PAYOUT, timeout=10)
        except grpc.RpcError as error:
            self.failures.append(f"{error.code().name}: {error.details()}")
            return
        self.latencies.append(time.monotonic() - start)

    def p95(self) -> float:
        return sorted(self.latencies)[int(0.95 * (len(self.latencies) - 1))]

    def figures(self) -> str:
        ms = sorted(1000 * s for s in self.latencies)
        return (
            f"{len(ms)} creates, p50 {statistics.median(ms):.1f} ms, p95 {1000 * self.p95():.1f} ms,"
            f" max {ms[-1]:.1f} ms"
        )


class OutboxSampler(Repeated):
    """The outbox's size, sampled every `every` seconds; `largest` is the most it held."""

    def __init__(self, database_url: str, every: float = 0.1) -> None:
        super().__init__(every)
        self._connection = psycopg2.connect(dsn(database_url))
        self._connection.autocommit = True
        self.largest = 0
        self.samples = 0

    def _tick(self) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM payout_event_outbox")
            row = cursor.fetchone()
        self.largest = max(self.largest, int(row[0]) if row else 0)
        self.samples += 1

    def _close(self) -> None:
        self._connection.close()


def cancelled(database_url: str, payout_ids: Sequence[str]) -> int:
    return statuses(database_url, payout_ids).get("CANCELLED", 0)


def test_a_backlog_of_expired_payouts_drains_at_the_relays_pace_while_creates_keep_their_latency(
    stack: Stack,
) -> None:
    # Without expiry: the shops, one template payout per shop, and the creates' latency alone.
    # The busy shop's creates stay UNPAID, more of them than the default service limit allows.
    unlimited = {"PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP": str(UNLIMITED)}
    setup = stack.serve(workers=1, env=unlimited)
    each = min(PER_SHOP, BACKLOG)
    shops = [stack.world.add_shop(funds=(each + 1) * COST) for _ in range(-(-BACKLOG // each))]
    templates = [create(setup.payouts, s.party_id, s.shop_id, PAYOUT).payout_id for s in shops]
    busy = stack.world.add_shop(funds=10_000 * COST)
    alone = Creates(setup.payouts, busy).run_for(60)
    start = time.monotonic()
    backlog = preload_unpaid(stack.database_url, templates, each, datetime.now(UTC) - timedelta(days=2))
    preloaded = time.monotonic() - start
    wait_for_empty_outbox(stack.database_url, 60)
    setup.close()

    # No relay (Kafka unset): the expiry fills the outbox to its bound and waits there.
    ttl = 3600  # the backlog is two days old; the payouts the test creates stay young
    paused = stack.serve(workers=1, env=expiring(ttl, PM_KAFKA_BOOTSTRAP_SERVERS="", **unlimited))
    with OutboxSampler(stack.database_url) as sampler:
        wait_for(lambda: outbox_size(stack.database_url) > expiry.OUTBOX_LIMIT, 60, "the outbox fills")
        # The batch that crossed the bound ends; then nothing more is cancelled.
        time.sleep(1)
        before = cancelled(stack.database_url, backlog)
        time.sleep(3 * expiry.POLL_INTERVAL)
        after = cancelled(stack.database_url, backlog)
    paused.close()
    bound = expiry.OUTBOX_LIMIT + expiry.BATCH_SIZE
    assert sampler.largest <= bound
    assert before == after < len(backlog)

    # With the relay: the expiry goes on as fast as the relay drains, and creates keep going.
    resumed = stack.serve(workers=1, env=expiring(ttl, **unlimited))
    start = time.monotonic()
    with OutboxSampler(stack.database_url) as draining, Creates(resumed.payouts, busy) as during:
        wait_for(lambda: cancelled(stack.database_url, backlog) == len(backlog), 180, "the backlog expires")
    took = time.monotonic() - start
    print(
        f"\nbacklog of {len(backlog)} expired payouts (preloaded in {preloaded:.1f} s):"
        f"\n  without a relay: {after} cancelled, then paused; outbox at most {sampler.largest}"
        f" ({sampler.samples} samples, bound {bound})"
        f"\n  with the relay: the other {len(backlog) - after} in {took:.1f} s"
        f" ({(len(backlog) - after) / took:.0f}/s);"
        f" outbox at most {draining.largest} ({draining.samples} samples)"
        f"\n  creates alone: {alone.figures()}"
        f"\n  creates during the expiry: {during.figures()}"
    )
    assert during.failures == [] and alone.failures == []
    # The outbox stays within the bound, give or take the concurrent creates' own events.
    assert draining.largest <= bound + 20
    assert during.p95() <= max(3 * alone.p95(), alone.p95() + 0.1)
    wait_for_empty_outbox(stack.database_url, 60)
    assert relay_leaders(stack.database_url, expiry.LEADER_LOCK_KEY) == 1
    assert audit_books(stack.database_url) == []
