"""Steady payout traffic from many client threads, for the events tests.

Every payout takes one of a few paths through the transition table. A call that meets a server
going away (UNAVAILABLE) is asked again, of any server: creates carry their own payout id and a
repeated status change is a no-op, so asking twice never changes anything twice.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import grpc

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from support.payouts import Stub, cancel, confirm, create, mark_paid
from support.world import Shop

STEPS: dict[str, Callable[[Stub, str], object]] = {
    "mark_paid": mark_paid,
    "confirm": confirm,
    "cancel": lambda stub, payout_id: cancel(stub, payout_id, "changed"),
}


def _step(step: str, payout_id: str, stub: Stub) -> object:
    return STEPS[step](stub, payout_id)


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


@dataclass
class Load:
    """Client threads, each with a channel per server address, running payouts through paths."""

    addresses: Sequence[str]
    shops: Sequence[Shop]
    threads: int = 8
    amount: int = 1_000
    # payout id -> how many events its path makes (1 for the create, 1 per step).
    expected: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
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

    def completed(self) -> int:
        with self._lock:
            return len(self.expected)

    def _start(self, limit: int | None) -> None:
        for n in range(self.threads):
            worker = threading.Thread(target=self._work, args=(n, limit), name=f"load-{n}")
            worker.start()
            self._workers.append(worker)

    def _join(self) -> None:
        for worker in self._workers:
            worker.join()
        self._workers.clear()

    def _work(self, n: int, limit: int | None) -> None:
        channels = [grpc.insecure_channel(address) for address in self.addresses]
        stubs = [payout_manager_pb2_grpc.PayoutManagementStub(channel) for channel in channels]
        chooser = random.Random(n)
        try:
            while not self._stop.is_set():
                number = next(self._counter)
                if limit is not None and number >= limit:
                    return
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
        self, stubs: list[Stub], chooser: random.Random, shop: Shop, path: tuple[str, ...], payout_id: str
    ) -> bool:
        def created(stub: Stub) -> object:
            return create(stub, shop.party_id, shop.shop_id, self.amount, payout_id=payout_id)

        calls: list[Callable[[Stub], object]] = [created]
        calls += [partial(_step, step, payout_id) for step in path]
        return all(self._call(stubs, chooser, call) for call in calls)

    def _call(self, stubs: list[Stub], chooser: random.Random, call: Callable[[Stub], object]) -> bool:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            stub = chooser.choice(stubs)
            try:
                call(stub)
                return True
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code not in _RETRIED or time.monotonic() > deadline:
                    with self._lock:
                        self.failures.append(f"{code}: {error}")
                    return False
                with self._lock:
                    self.retried += 1
                time.sleep(0.05)
