"""Steady traffic from many client threads, for the events and fault tests.

Every payout takes one of a few paths through the transition table. A call that meets a server
going away (UNAVAILABLE) is asked again, of any server: creates carry their own payout id, a
repeated status change is a no-op and a repeated hold, commit or rollback of a plan too, so asking
twice never changes anything twice. With `reads`, every answered change is read back at once
(GetPayout, GetPayoutEvents, ListPayouts) and must show; with `plans`, every fourth unit of work is
an Accounter plan (hold, read, commit or roll back) between two accounts of its own.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.calls import Stub, cancel, confirm, create, mark_paid
from payout_manager_testing.world import Shop

STEPS: dict[str, Callable[[Stub, str], pb.Payout]] = {
    "mark_paid": mark_paid,
    "confirm": confirm,
    "cancel": lambda stub, payout_id: cancel(stub, payout_id, "changed"),
}


# Each path is what follows the create; cancel after confirm is a revert.
PATHS: tuple[tuple[str, ...], ...] = (
    (),
    ("confirm",),
    ("cancel",),
    ("mark_paid",),
    ("mark_paid", "confirm"),
    ("confirm", "cancel"),
    ("mark_paid", "confirm", "cancel"),
)
RETRY_FOR = 60.0
_RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
PLAN_AMOUNT = 7


@dataclass(frozen=True)
class Stubs:
    """One client's stubs on one server."""

    payouts: Stub
    accounter: accounter_pb2_grpc.AccounterStub


Call = Callable[[Stubs], Any]


@dataclass
class Load:
    """Client threads, each with a channel per server address, running payouts through paths."""

    addresses: Sequence[str]
    shops: Sequence[Shop]
    threads: int = 8
    amount: int = 1_000
    reads: bool = False
    # Pairs of accounts (from, to) that Accounter plans move money between; none: no plans.
    plans: Sequence[tuple[int, int]] = ()
    # payout id -> how many events its path makes (1 for the create, 1 per step).
    expected: dict[str, int] = field(default_factory=dict)
    # payout id -> the last answer a change of it got; plan id -> the status its last call left.
    answered: dict[str, pb.Payout] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # Every answer by status code name (OK included), retried ones too.
    codes: Counter[str] = field(default_factory=Counter)
    # Every answer as (time.monotonic() when it came, status code name), in order.
    timeline: list[tuple[float, str]] = field(default_factory=list)
    retried: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def run(self, payouts: int) -> dict[str, int]:
        """Runs `payouts` payouts through their paths; returns the expected event counts."""
        self._start(limit=payouts)
        self._join()
        return self.expected

    def start(self) -> None:
        """Keeps payouts flowing until `stop`."""
        self._start(limit=None)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._join()
        return self.expected

    def last_failed_answer(self) -> float | None:
        """When the last answer other than OK came (time.monotonic()), if any did."""
        with self._lock:
            return max((at for at, code in self.timeline if code != "OK"), default=None)

    def completed(self) -> int:
        with self._lock:
            return len(self.expected)

    def _start(self, limit: int | None) -> None:
        for n in range(self.threads):
            # Daemons: a test that fails before it stops the load must not hang the run.
            worker = threading.Thread(target=self._work, args=(n, limit), name=f"load-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _join(self) -> None:
        for worker in self._workers:
            worker.join()
        self._workers.clear()

    def _work(self, n: int, limit: int | None) -> None:
        channels = [grpc.insecure_channel(address) for address in self.addresses]
        stubs = [
            Stubs(payout_manager_pb2_grpc.PayoutManagementStub(c), accounter_pb2_grpc.AccounterStub(c))
            for c in channels
        ]
        chooser = random.Random(n)
        try:
            while not self._stop.is_set():
                number = next(self._counter)
                if limit is not None and number >= limit:
                    return
                if self.plans and number % 4 == 3:
                    self._one_plan(stubs, chooser, self.plans[number % len(self.plans)], number)
                    continue
                shop = self.shops[number % len(self.shops)]
                path = PATHS[number % len(PATHS)]
                payout_id = f"load-{uuid.uuid4()}"
                if self._one_payout(stubs, chooser, shop, path, payout_id):
                    with self._lock:
                        self.expected[payout_id] = 1 + len(path)
        finally:
            for channel in channels:
                channel.close()

    def _one_payout(
        self, stubs: list[Stubs], chooser: random.Random, shop: Shop, path: tuple[str, ...], payout_id: str
    ) -> bool:
        def created(stub: Stubs) -> pb.Payout:
            return create(stub.payouts, shop.party_id, shop.shop_id, self.amount, payout_id=payout_id)

        changes: list[Callable[[Stubs], pb.Payout]] = [created]
        changes += [partial(_step, STEPS[step], payout_id) for step in path]
        for change in changes:
            payout = self._call(stubs, chooser, change)
            if payout is None:
                return False
            with self._lock:
                self.answered[payout_id] = payout
            if self.reads and not self._read_back(stubs, chooser, shop, payout):
                return False
        return True

    def _read_back(self, stubs: list[Stubs], chooser: random.Random, shop: Shop, payout: pb.Payout) -> bool:
        """Reads the answered change back through any server; it must be there."""
        read = self._call(stubs, chooser, partial(_get, payout.payout_id))
        events = self._call(stubs, chooser, partial(_events, payout.payout_id))
        listed = self._call(stubs, chooser, partial(_list, shop))
        if read is None or events is None or listed is None:
            return False
        if read.revision < payout.revision or len(events.events) < payout.revision:
            self._fail(f"{payout.payout_id}: revision {payout.revision} answered, then read {read.revision}")
            return False
        return True

    def _one_plan(
        self, stubs: list[Stubs], chooser: random.Random, accounts: tuple[int, int], n: int
    ) -> None:
        """Holds a plan, reads it back, then commits it (one in two) or rolls it back."""
        plan_id = f"load-plan-{uuid.uuid4()}"
        if self._call(stubs, chooser, partial(_hold, plan_id, accounts)) is None:
            return
        with self._lock:
            self.planned[plan_id] = accounter_pb.POSTING_PLAN_STATUS_HOLD
        plan = self._call(stubs, chooser, partial(_plan, plan_id))
        if plan is None:
            return
        if plan.status != accounter_pb.POSTING_PLAN_STATUS_HOLD:
            self._fail(f"{plan_id}: held, then read as {plan.status}")
            return
        commit = n % 8 == 3
        if self._call(stubs, chooser, partial(_settle, plan_id, commit)) is None:
            return
        with self._lock:
            self.planned[plan_id] = (
                accounter_pb.POSTING_PLAN_STATUS_COMMITTED
                if commit
                else accounter_pb.POSTING_PLAN_STATUS_ROLLED_BACK
            )
        self._call(stubs, chooser, partial(_account, accounts[0]))

    def _call(self, stubs: list[Stubs], chooser: random.Random, call: Call) -> Any:
        """The call's answer, asked again of any server while it is UNAVAILABLE; None on a failure."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            stub = chooser.choice(stubs)
            try:
                answer = call(stub)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                with self._lock:
                    self.codes[code.name if code else "NONE"] += 1
                    self.timeline.append((time.monotonic(), code.name if code else "NONE"))
                if code not in _RETRIED or time.monotonic() > deadline:
                    self._fail(f"{code}: {error}")
                    return None
                with self._lock:
                    self.retried += 1
                time.sleep(0.05)
            else:
                with self._lock:
                    self.codes["OK"] += 1
                    self.timeline.append((time.monotonic(), "OK"))
                return answer

    def _fail(self, problem: str) -> None:
        with self._lock:
            self.failures.append(problem)


def _step(action: Callable[[Stub, str], pb.Payout], payout_id: str, stub: Stubs) -> pb.Payout:
    return action(stub.payouts, payout_id)


def _get(payout_id: str, stub: Stubs) -> pb.Payout:
    return stub.payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id))


def _events(payout_id: str, stub: Stubs) -> pb.GetPayoutEventsResponse:
    return stub.payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id))


def _list(shop: Shop, stub: Stubs) -> pb.ListPayoutsResponse:
    return stub.payouts.ListPayouts(
        pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id, page_size=5)
    )


def _hold(plan_id: str, accounts: tuple[int, int], stub: Stubs) -> accounter_pb.PostingPlanLog:
    posting = accounter_pb.Posting(
        from_id=accounts[0], to_id=accounts[1], amount=PLAN_AMOUNT, currency="RUB", description="load"
    )
    batch = accounter_pb.PostingBatch(id=1, postings=[posting])
    return stub.accounter.Hold(accounter_pb.HoldRequest(plan_id=plan_id, batch=batch))


def _plan(plan_id: str, stub: Stubs) -> accounter_pb.PostingPlan:
    return stub.accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=plan_id))


def _settle(plan_id: str, commit: bool, stub: Stubs) -> accounter_pb.PostingPlanLog:
    if commit:
        return stub.accounter.CommitPlan(accounter_pb.CommitPlanRequest(plan_id=plan_id))
    return stub.accounter.RollbackPlan(accounter_pb.RollbackPlanRequest(plan_id=plan_id))


def _account(account_id: int, stub: Stubs) -> accounter_pb.Account:
    return stub.accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=account_id))
