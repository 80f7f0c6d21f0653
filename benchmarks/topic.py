"""What reaches the topic: a consumer in a group of its own, reading from the topic's beginning.

Each event is timed against its `created_at`, which is stamped inside the payout's transaction
before it commits: the delay measured is an upper bound of the delay from commit to delivery.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC

import psycopg2
from confluent_kafka import Consumer

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb

# Examples printed per kind of problem; the count says how many there were.
EXAMPLES = 5


@dataclass(frozen=True)
class Delivery:
    """One event as the consumer got it; times in seconds since the epoch."""

    payout_id: str
    sequence_id: int
    event_id: str
    created_at: float
    # The Kafka message timestamp: the relay's producer's clock at produce().
    produced: float
    arrived: float


class TopicReader:
    """Reads the whole topic on a thread of its own until closed; `deliveries()` in arrival order."""

    def __init__(self, bootstrap_servers: str, topic: str, *, quiet: bool = False) -> None:
        """`quiet`: librdkafka logs nothing (a run that kills brokers on purpose needs no word of it)."""
        self._consumer = Consumer(
            {
                **({"log_level": 0} if quiet else {}),
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"pm-bench-{uuid.uuid4().hex[:12]}",
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([topic])
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name="topic-reader", daemon=True)
        self._thread.start()

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Waits until `count` events have arrived; False if they did not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self._deliveries) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        self._consumer.close()

    def _read(self) -> None:
        while not self._done.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            arrived = time.time()
            event = pb.Event()
            event.ParseFromString(message.value() or b"")
            delivery = Delivery(
                payout_id=event.payout_id,
                sequence_id=event.sequence_id,
                event_id=event.event_id,
                created_at=event.created_at.ToDatetime(tzinfo=UTC).timestamp(),
                produced=message.timestamp()[1] / 1000,
                arrived=arrived,
            )
            with self._lock:
                self._deliveries.append(delivery)


def delays_ms(deliveries: Iterable[Delivery], since: float, until: float) -> list[float]:
    """created_at to arrival, in milliseconds, of the events created between `since` and `until`."""
    return [(d.arrived - d.created_at) * 1000 for d in deliveries if since <= d.created_at <= until]


# The row ids of events that are history, never published (preloaded): first, last (inclusive).
EventRows = tuple[int, int]
NO_HISTORY: EventRows = (0, -1)


def stored_events(database_url: str, history: EventRows = NO_HISTORY) -> list[tuple[str, int, str]]:
    """(payout_id, sequence_id, event_id) of every event in the database but the `history` rows."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT payout_id, sequence_id, event_id::text FROM payout_event WHERE id < %s"
            " UNION ALL SELECT payout_id, sequence_id, event_id::text FROM payout_event WHERE id > %s",
            history,
        )
        return [(payout_id, int(sequence_id), event_id) for payout_id, sequence_id, event_id in cursor]


def published_count(database_url: str, history: EventRows = NO_HISTORY) -> int:
    """How many stored events are to be published: all but the `history` rows."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM payout_event WHERE id < %s)"
            " + (SELECT count(*) FROM payout_event WHERE id > %s)",
            history,
        )
        (count,) = cursor.fetchone() or (0,)
        return int(count)


def topic_problems(stored: Iterable[tuple[str, int, str]], deliveries: list[Delivery]) -> list[str]:
    """What differs between the stored events (payout_id, sequence_id, event_id) and the topic.

    Every stored event must arrive exactly once, each payout's in sequence order, and nothing else.
    """
    expected = {(payout_id, sequence_id): event_id for payout_id, sequence_id, event_id in stored}
    published = Counter((d.payout_id, d.sequence_id, d.event_id) for d in deliveries)
    published_keys = {(payout_id, sequence_id) for payout_id, sequence_id, _ in published}
    return [
        *_listed("stored but never published", [key for key in expected if key not in published_keys]),
        *_listed("published more than once", [key for key, times in published.items() if times > 1]),
        *_listed(
            "published but not stored",
            [(p, s, e) for p, s, e in published if expected.get((p, s)) != e],
        ),
        *_listed("published out of sequence order", _out_of_order(deliveries)),
    ]


def _out_of_order(deliveries: list[Delivery]) -> list[str]:
    last: dict[str, int] = {}
    late = []
    for delivery in deliveries:
        if delivery.sequence_id < last.get(delivery.payout_id, 0):
            late.append(f"{delivery.payout_id} #{delivery.sequence_id}")
        last[delivery.payout_id] = max(last.get(delivery.payout_id, 0), delivery.sequence_id)
    return late


def _listed(problem: str, found: Sequence[object]) -> list[str]:
    if not found:
        return []
    examples = ", ".join(str(item) for item in found[:EXAMPLES])
    return [f"{len(found)} events {problem}, e.g. {examples}"]
