"""Race freedom across processes: many clients, `serve --workers 2`, one PostgreSQL.

Every client thread has its own channel, so the kernel spreads their connections over both server
processes; the tests prove outcomes, not timings.
"""

from __future__ import annotations

import contextlib
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support import books
from support.payouts import Stub, cancel, confirm, create, fail, mark_paid, refusal

from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager.storage.audit import audit_books
from payout_manager_testing.world import Shop, World

T = TypeVar("T")
CLIENT_THREADS = 12
# 1000 paid out plus the SPEC terms' 1% fee.
PAYOUT = 1_000
COST = 1_010


class Clients:
    """A pool of client threads, each with its own channel (so its own server connection)."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._local = threading.local()
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def stub(self) -> Stub:
        if not hasattr(self._local, "stub"):
            channel = grpc.insecure_channel(self._address)
            with self._lock:
                self._channels.append(channel)
            self._local.stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        stub: Stub = self._local.stub
        return stub

    def run(self, calls: list[Callable[[Stub], T]]) -> list[T | grpc.RpcError]:
        """Runs every call at once (as far as the pool allows); returns results or errors in order."""
        start = threading.Barrier(min(CLIENT_THREADS, len(calls)))

        def one(call: Callable[[Stub], T]) -> T | grpc.RpcError:
            stub = self.stub()
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=10)
            try:
                return call(stub)
            except grpc.RpcError as error:
                return error

        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            return list(pool.map(one, calls))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture
def clients(server_address: str) -> Iterator[Clients]:
    pool = Clients(server_address)
    yield pool
    pool.close()


def _on(action: Callable[[Stub, str], pb.Payout], payout_id: str, stub: Stub) -> pb.Payout:
    return action(stub, payout_id)


def _create(shop: Shop, stub: Stub) -> pb.Payout:
    return create(stub, shop.party_id, shop.shop_id, PAYOUT)


def outcomes(results: Sequence[object]) -> Counter[str]:
    """'OK' or 'CODE/REASON' for each result."""
    counted: Counter[str] = Counter()
    for result in results:
        if isinstance(result, grpc.RpcError):
            code, reason = refusal(result)
            counted[f"{code.name}/{reason}"] += 1
        else:
            counted["OK"] += 1
    return counted


def test_a_shop_funded_for_20_payouts_gets_exactly_20_of_60_concurrent_creates(
    clients: Clients, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=20 * COST)

    results = clients.run([lambda s: create(s, shop.party_id, shop.shop_id, PAYOUT) for _ in range(60)])

    assert outcomes(results) == {"OK": 20, "FAILED_PRECONDITION/INSUFFICIENT_FUNDS": 40}
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount) == (20 * COST, 0)
    created = [r.payout_id for r in results if isinstance(r, pb.Payout)]
    assert books.payouts_whose_plans_disagree(database_url, created) == []
    assert all(seq == [1] for seq in books.event_sequences(database_url, created).values())


def test_twenty_concurrent_creates_with_one_id_leave_one_payout_and_one_hold(
    clients: Clients, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=100 * COST)
    payout_id = f"race-{uuid.uuid4()}"

    results = clients.run(
        [lambda s: create(s, shop.party_id, shop.shop_id, PAYOUT, payout_id=payout_id) for _ in range(20)]
    )

    assert outcomes(results) == {"OK": 20}
    assert len({r.SerializeToString(deterministic=True) for r in results if isinstance(r, pb.Payout)}) == 1
    assert world.balance(shop.settlement).min_available_amount == 100 * COST - COST
    plan = world.accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=f"payout_{payout_id}"))
    assert [b.id for b in plan.batches] == [1]
    assert books.event_sequences(database_url, [payout_id]) == {payout_id: [1]}


def test_concurrent_confirm_and_cancel_end_in_a_state_whose_balances_match(
    clients: Clients, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=30 * COST)
    made = [create(clients.stub(), shop.party_id, shop.shop_id, PAYOUT).payout_id for _ in range(30)]

    calls: list[Callable[[Stub], pb.Payout]] = []
    for payout_id in made:
        calls += [partial(_on, confirm, payout_id), partial(_on, cancel, payout_id)]
    random.shuffle(calls)
    results = clients.run(calls)

    # Either order ends CANCELLED: cancel then confirm is refused; confirm then cancel reverts.
    assert set(outcomes(results)) <= {"OK", "FAILED_PRECONDITION/INVALID_PAYOUT_STATUS"}
    final = [clients.stub().GetPayout(pb.GetPayoutRequest(payout_id=p)) for p in made]
    assert {p.status for p in final} == {pb.PAYOUT_STATUS_CANCELLED}
    settlement = world.balance(shop.settlement)
    assert (settlement.own_amount, settlement.min_available_amount, settlement.max_available_amount) == (
        30 * COST,
        30 * COST,
        30 * COST,
    )
    assert world.balance(shop.payout).own_amount == 0
    assert books.payouts_whose_plans_disagree(database_url, made) == []
    for payout_id, sequence in books.event_sequences(database_url, made).items():
        assert sequence == list(range(1, len(sequence) + 1)), payout_id


# The event histories (statuses after `created`) a payout may have after a confirm, a cancel and
# a failure run at once, by the serial order they took: a confirm first lets one of the others
# revert it; a cancel or a failure first is final.
SERIAL_HISTORIES = {
    (pb.PAYOUT_STATUS_CONFIRMED, pb.PAYOUT_STATUS_CANCELLED),
    (pb.PAYOUT_STATUS_CONFIRMED, pb.PAYOUT_STATUS_FAILED),
    (pb.PAYOUT_STATUS_CANCELLED,),
    (pb.PAYOUT_STATUS_FAILED,),
}


def test_concurrent_confirm_cancel_and_fail_of_one_payout_end_in_one_serial_order(
    clients: Clients, world: World, database_url: str
) -> None:
    shop = world.add_shop(funds=30 * COST)
    system = world.system_settlement()
    system_before = amounts(world.balance(system))
    made = [create(clients.stub(), shop.party_id, shop.shop_id, PAYOUT).payout_id for _ in range(30)]

    calls: list[Callable[[Stub], pb.Payout]] = []
    for payout_id in made:
        calls += [partial(_on, action, payout_id) for action in (confirm, cancel, fail)]
    random.shuffle(calls)
    results = clients.run(calls)

    assert set(outcomes(results)) <= {"OK", "FAILED_PRECONDITION/INVALID_PAYOUT_STATUS"}
    answered = Counter(r.payout_id for r in results if isinstance(r, pb.Payout))
    histories: Counter[tuple[int, ...]] = Counter()
    for payout_id in made:
        events = clients.stub().GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
        history = tuple(e.payout_change.status_changed.status for e in events[1:])
        assert history in SERIAL_HISTORIES, (payout_id, history)
        # Every change answered OK, and only those: the refused calls changed nothing.
        assert answered[payout_id] == len(history), payout_id
        final = clients.stub().GetPayout(pb.GetPayoutRequest(payout_id=payout_id))
        assert (final.status, final.revision) == (history[-1], len(events))
        assert final.HasField("failure") is (final.status == pb.PAYOUT_STATUS_FAILED)
        histories[history] += 1
    print("serial orders taken:", dict(histories))
    # Whatever the order, the money is back: nothing held, nothing moved.
    assert amounts(world.balance(shop.settlement)) == (30 * COST, 30 * COST, 30 * COST)
    assert amounts(world.balance(shop.payout)) == (0, 0, 0)
    assert amounts(world.balance(system)) == system_before
    assert books.payouts_whose_plans_disagree(database_url, made) == []
    assert audit_books(database_url) == []


def test_a_storm_of_mixed_calls_on_many_shops_keeps_the_books(
    clients: Clients, world: World, database_url: str
) -> None:
    """Creates, mark-paids, confirms and cancels on 8 shops sharing one system account, in any order."""
    shops = [world.add_shop(funds=15 * COST) for _ in range(8)]
    made = [create(clients.stub(), s.party_id, s.shop_id, PAYOUT).payout_id for s in shops for _ in range(5)]
    actions: list[Callable[[Stub, str], pb.Payout]] = [confirm, cancel, mark_paid, fail]
    calls: list[Callable[[Stub], pb.Payout]] = [
        partial(_on, action, payout_id) for payout_id in made for action in random.sample(actions, k=3)
    ]
    calls += [partial(_create, shop) for shop in shops for _ in range(12)]
    random.shuffle(calls)

    results = clients.run(calls)

    assert set(outcomes(results)) <= {
        "OK",
        "FAILED_PRECONDITION/INVALID_PAYOUT_STATUS",
        "FAILED_PRECONDITION/INSUFFICIENT_FUNDS",
    }
    created_later = [r.payout_id for r in results if isinstance(r, pb.Payout) and r.payout_id not in made]
    every = made + created_later
    assert books.unbalanced_currencies(database_url) == []
    assert books.payouts_whose_plans_disagree(database_url, every) == []
    for payout_id, sequence in books.event_sequences(database_url, every).items():
        assert sequence == list(range(1, len(sequence) + 1)), payout_id
    for shop in shops:
        assert world.balance(shop.settlement).min_available_amount >= 0
    assert audit_books(database_url) == []


def amounts(account: accounter_pb.Account) -> tuple[int, int, int]:
    return (account.own_amount, account.min_available_amount, account.max_available_amount)


def test_the_shared_fee_account_takes_concurrent_payouts_in_several_slots_and_stays_exact(
    clients: Clients, world: World, database_url: str
) -> None:
    """The system account is credited through free slots, not one queue; its balances stay exact."""
    shops = [world.add_shop(funds=10 * COST) for _ in range(24)]
    system = world.system_settlement()
    own, low, high = amounts(world.balance(system))

    made = clients.run([partial(_create, shop) for shop in shops for _ in range(5)])

    assert outcomes(made) == {"OK": 120}
    fee = COST - PAYOUT
    assert amounts(world.balance(system)) == (own, low, high + 120 * fee)
    assert books.slot_count(database_url, system) > 1
    moment = datetime.now(UTC)
    ids = [p.payout_id for p in made if isinstance(p, pb.Payout)]
    reverted = ids[::3]

    confirmed = clients.run([partial(_on, confirm, payout_id) for payout_id in ids])
    cancelled = clients.run([partial(_on, cancel, payout_id) for payout_id in reverted])

    assert outcomes(confirmed) == {"OK": 120}
    assert outcomes(cancelled) == {"OK": len(reverted)}
    kept = (120 - len(reverted)) * fee
    assert amounts(world.balance(system)) == (own + kept, low + kept, high + kept)
    at = Timestamp()
    at.FromDatetime(moment)
    past = world.accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=system, at=at))
    assert amounts(past) == (own, low, high + 120 * fee)
    assert audit_books(database_url) == []
