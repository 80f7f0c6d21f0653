"""The service limit of SPEC 1.1: at most PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP payouts UNPAID or PAID
per shop, exact under concurrent creates from several `serve` processes on one database.

Each test has a stack of its own (database, PartyManagement, topic); the tests count answers and
stored payouts, and check the books.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from support.books import event_sequences, payouts_whose_plans_disagree
from support.events import Stack
from support.metrics import scrape, value
from support.payouts import Stub, cancel, confirm, create, fail, mark_paid, refusal

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager.storage.audit import audit_books
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.processes import free_port

LIMIT = 10
CREATES = 40
# 1000 paid out plus the SPEC terms' 1% fee.
PAYOUT = 1_000
COST = 1_010
LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYOUT_LIMIT_EXCEEDED")


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def limited(**more: str) -> dict[str, str]:
    return {"PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP": str(LIMIT), **more}


def answer(call: object) -> str:
    if isinstance(call, grpc.RpcError):
        code, reason = refusal(call)
        return f"{code.name}/{reason}"
    return "OK"


def test_a_shop_limited_to_10_gets_exactly_10_of_40_concurrent_creates_from_two_serves(stack: Stack) -> None:
    metrics = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    servers = [stack.serve(workers=2, env=limited(PM_METRICS_ADDRESS=address)) for address in metrics]
    shop = stack.world.add_shop(funds=CREATES * COST)  # funds for all: only the limit refuses
    addresses = [s.address for s in servers]
    start = threading.Barrier(CREATES)

    def one(index: int) -> pb.Payout | grpc.RpcError:
        # A channel per call: the kernel spreads them over both processes and their workers.
        with grpc.insecure_channel(addresses[index % 2]) as channel:
            stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)
            start.wait(timeout=30)
            try:
                return create(stub, shop.party_id, shop.shop_id, PAYOUT)
            except grpc.RpcError as error:
                return error

    with ThreadPoolExecutor(CREATES) as pool:
        results = list(pool.map(one, range(CREATES)))

    assert Counter(answer(r) for r in results) == {
        "OK": LIMIT,
        "RESOURCE_EXHAUSTED/PAYOUT_LIMIT_EXCEEDED": 30,
    }
    made = [r.payout_id for r in results if isinstance(r, pb.Payout)]
    stub = servers[0].payouts
    listed = stub.ListPayouts(pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id))
    assert sorted(p.payout_id for p in listed.payouts) == sorted(made)
    # Only the 10 payouts hold money; the refused creates left nothing.
    assert stack.world.balance(shop.settlement).min_available_amount == (CREATES - LIMIT) * COST
    assert audit_books(stack.database_url) == []
    # The refusals are counted, over both processes.
    refused = sum(value(scrape(address), "pm_payout_limit_refusals_total") for address in metrics)
    assert refused == 30


@pytest.mark.parametrize("resolve", [confirm, cancel, fail], ids=["confirm", "cancel", "fail"])
def test_resolving_a_payout_frees_a_place_at_once_and_marking_it_paid_does_not(
    stack: Stack, resolve: object
) -> None:
    served = stack.serve(workers=1, env=limited())
    stub: Stub = served.payouts
    shop = stack.world.add_shop(funds=2 * LIMIT * COST)
    made = [create(stub, shop.party_id, shop.shop_id, PAYOUT).payout_id for _ in range(LIMIT)]
    mark_paid(stub, made[0])

    with pytest.raises(grpc.RpcError) as refused:
        create(stub, shop.party_id, shop.shop_id, PAYOUT)
    assert refusal(refused.value) == LIMITED

    resolve(stub, made[1])  # type: ignore[operator]
    freed = create(stub, shop.party_id, shop.shop_id, PAYOUT)
    assert freed.status == pb.PAYOUT_STATUS_UNPAID
    with pytest.raises(grpc.RpcError) as again:
        create(stub, shop.party_id, shop.shop_id, PAYOUT)
    assert refusal(again.value) == LIMITED

    # An idempotent repeat of a stored create is answered as before, limit or not.
    assert create(stub, shop.party_id, shop.shop_id, PAYOUT, payout_id=freed.payout_id) == freed
    # Another shop of the same party is not limited by this one.
    other = stack.world.add_shop(funds=COST)
    assert create(stub, other.party_id, other.shop_id, PAYOUT).status == pb.PAYOUT_STATUS_UNPAID
    every = [*made, freed.payout_id]
    assert payouts_whose_plans_disagree(stack.database_url, every) == []
    assert all(s == list(range(1, len(s) + 1)) for s in event_sequences(stack.database_url, every).values())
