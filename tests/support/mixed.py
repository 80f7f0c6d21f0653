"""The mixed load of the fault tests on a `Stack`, and what must hold after it, whatever the fault."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.storage.audit import audit_books
from payout_manager_testing.load import Load
from support.events import Stack, assert_complete_and_ordered

FUNDS = 10**12
THREADS = 8


@contextmanager
def mixed_load(stack: Stack) -> Iterator[Load]:
    """Eight client threads of payouts with read-backs and Accounter plans on `serve --workers 2`.

    The load runs inside the block, from a second before the block's own work to two after.
    """
    served = stack.serve(workers=2)
    shops = [stack.world.add_shop(funds=FUNDS) for _ in range(4)]
    plans = [(stack.world.account(), stack.world.account()) for _ in range(4)]
    load = Load([served.address], shops, threads=THREADS, reads=True, plans=plans)
    load.start()
    try:
        time.sleep(1)
        yield load
        time.sleep(2)
    finally:
        load.stop()
    print(f"answers {dict(load.codes)}, {len(load.expected)} payouts, {len(load.planned)} plans")


def assert_nothing_lost(stack: Stack, load: Load, *, repeats_allowed: bool = False) -> int:
    """No call was answered with anything but OK or a retried UNAVAILABLE, and every OK held: the
    payouts and plans are as last answered, the books audit clean, every event on the topic once
    and in order per payout, or, with `repeats_allowed`, at least once. Returns the repeats."""
    assert not load.failures, f"{len(load.failures)} failed calls, e.g. {load.failures[:3]}"
    assert set(load.codes) <= {"OK", "UNAVAILABLE"}, load.codes
    assert len(load.expected) > 100
    stub = stack.servers[0].payouts
    accounter = accounter_pb2_grpc.AccounterStub(stack.servers[0].channel)
    for payout_id, answered in load.answered.items():
        stored = stub.GetPayout(pb.GetPayoutRequest(payout_id=payout_id))
        assert (stored.status, stored.revision) == (answered.status, answered.revision), payout_id
    for plan_id, status in load.planned.items():
        plan = accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=plan_id))
        assert plan.status == status, plan_id
    assert audit_books(stack.database_url) == []
    records = stack.published(load.expected, timeout=120)
    assert_complete_and_ordered(records, load.expected, repeats_allowed=repeats_allowed)
    return len([r for r in records if r.key in load.expected]) - sum(load.expected.values())
