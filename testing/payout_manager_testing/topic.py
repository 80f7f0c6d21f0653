"""Reading the payout manager's topic as a consumer would: each record with its decoded event."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb


@dataclass(frozen=True)
class Record:
    """One message of the topic, decoded."""

    key: str
    partition: int
    offset: int
    headers: dict[str, bytes]
    value: bytes
    event: pb.Event
    # Milliseconds since the epoch: when the relay produced it, or, on a topic whose
    # message.timestamp.type is LogAppendTime, when the partition's leader appended it.
    timestamp_ms: int


class TopicReader:
    """A consumer in a consumer group of its own, reading the topic from its beginning."""

    def __init__(self, bootstrap_servers: str, topic: str, *, config: dict[str, Any] | None = None) -> None:
        """`config`: more librdkafka settings, such as security.protocol for a secured broker."""
        self._consumer = Consumer(
            {
                **(config or {}),
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"pm-test-{uuid.uuid4().hex[:12]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
            }
        )
        self._consumer.subscribe([topic])
        self.records: list[Record] = []

    def read_until(self, done: Callable[[list[Record]], bool], timeout: float) -> list[Record]:
        """Reads until `done(all records so far)` or the timeout; returns every record read."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the topic did not have what was expected; {len(self.records)} records read"
                )
            message = self._consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            event = pb.Event()
            event.ParseFromString(message.value() or b"")
            self.records.append(
                Record(
                    key=(message.key() or b"").decode(),
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    headers=_headers(message),
                    value=message.value() or b"",
                    event=event,
                    timestamp_ms=message.timestamp()[1],
                )
            )
        return self.records

    def read_events_of(self, expected: dict[str, int], timeout: float) -> list[Record]:
        """Reads until every payout in `expected` has had an event with its expected last sequence id."""

        # Looked at as they arrive: a scan of every record per record read took minutes for 20,000.
        waiting = {payout_id: n for payout_id, n in expected.items() if n > 0}
        looked_at = 0

        def seen_all(records: list[Record]) -> bool:
            nonlocal looked_at
            for index in range(looked_at, len(records)):
                record = records[index]
                if record.key in waiting and record.event.sequence_id >= waiting[record.key]:
                    del waiting[record.key]
            looked_at = len(records)
            return not waiting

        return self.read_until(seen_all, timeout)

    def close(self) -> None:
        self._consumer.close()


def _headers(message: Message) -> dict[str, bytes]:
    found = message.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return {name: value.encode() if isinstance(value, str) else value or b"" for name, value in pairs}
