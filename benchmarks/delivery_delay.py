"""The delay from commit to Kafka delivery, for a steady stream of payouts.

    .venv/bin/python -m benchmarks.delivery_delay [--rate 100] [--seconds 30] [--workers 2]

Starts the whole stack (benchmarks.stack), creates payouts at a steady rate from several client
threads, and reads the topic in a consumer group. The delay of an event is the moment the consumer
has it minus the event's `created_at` (stamped in the payout's transaction, just before it
commits), so it slightly overstates the delay from commit.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from dataclasses import dataclass

import grpc

from benchmarks.measure import percentile
from benchmarks.stack import CURRENCY, Running, running
from benchmarks.topic import TopicReader
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc

CLIENTS = 8
# Seconds the events of a stream may take to arrive.
WAIT = 60.0


def _create_steadily(stack: Running, rate: float, seconds: float, created: dict[str, float]) -> None:
    """Creates payouts at `rate` per second; `created` gets each payout id and when its response came."""
    lock = threading.Lock()
    start = time.monotonic() + 0.5

    def client(n: int) -> None:
        with grpc.insecure_channel(stack.address) as channel:
            stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
            k = 0
            while True:
                due = start + (k * CLIENTS + n) / rate
                if due - start >= seconds:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                shop = stack.shops[(k * CLIENTS + n) % len(stack.shops)]
                payout_id = str(uuid.uuid4())
                stub.CreatePayout(
                    pb.CreatePayoutRequest(
                        payout_id=payout_id,
                        party_id=shop.party_id,
                        shop_id=shop.shop_id,
                        cash=party_pb.Cash(amount=10_000, currency=CURRENCY),
                    ),
                    timeout=10,
                )
                with lock:
                    created[payout_id] = time.time()
                k += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass(frozen=True)
class Delay:
    """Seconds from an event's commit to the relay's produce() call and to the consumer.

    The commit itself is not observable from outside, so it is bracketed: the event's `created_at`
    is stamped when the transaction starts its work (before its lock waits), and the client's
    response comes after the commit.
    """

    stamped_to_produce: float
    stamped_to_consumer: float
    response_to_consumer: float


def measure(rate: float, seconds: float, workers: int) -> list[Delay]:
    with running(shops=100, workers=workers) as stack:
        if stack.bootstrap_servers is None:
            raise SystemExit("no JDK here: no local Kafka, nothing to measure")
        topic = TopicReader(stack.bootstrap_servers, stack.topic)
        try:
            # Warm-up, not measured: the relay's producer, the topic and the consumer's group get ready.
            warm_up: dict[str, float] = {}
            _create_steadily(stack, rate, 3.0, warm_up)
            created: dict[str, float] = {}
            if topic.wait_for(len(warm_up), WAIT):
                _create_steadily(stack, rate, seconds, created)
            if not topic.wait_for(len(warm_up) + len(created), WAIT):
                raise SystemExit(f"the events did not arrive within {WAIT:g} s")
            arrivals = {delivery.payout_id: delivery for delivery in topic.deliveries()}
        finally:
            topic.close()
        return [
            Delay(
                arrivals[payout_id].produced - arrivals[payout_id].created_at,
                arrivals[payout_id].arrived - arrivals[payout_id].created_at,
                arrivals[payout_id].arrived - responded,
            )
            for payout_id, responded in created.items()
        ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="payouts created per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the stream runs")
    parser.add_argument("--workers", type=int, default=2, help="serve --workers")
    args = parser.parse_args()
    delays = measure(args.rate, args.seconds, args.workers)
    print(
        f"commit to delivery, {len(delays)} payouts at {args.rate:g}/s for {args.seconds:g} s,"
        f" serve --workers {args.workers}"
    )
    print(f"{'':24}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, values in (
        ("created_at to produce()", [d.stamped_to_produce for d in delays]),
        ("created_at to consumer", [d.stamped_to_consumer for d in delays]),
        ("response to consumer", [d.response_to_consumer for d in delays]),
    ):
        ms = [v * 1000 for v in values]
        figures = [statistics.median(ms), percentile(ms, 0.90), percentile(ms, 0.99), max(ms)]
        print(f"{label:24}" + "".join(f"{f:6.1f} ms" for f in figures))


if __name__ == "__main__":
    main()
