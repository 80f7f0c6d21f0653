"""The events' side of the end-to-end tests: a stack that publishes, and a reader of its topic.

Each `Stack` has a database, a reference PartyManagement server and a topic of its own, so that
its relay publishes exactly the events of its own test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import psycopg2
from confluent_kafka import Consumer, TopicPartition
from google.protobuf import json_format

from payout_manager.events.relay import LEADER_LOCK_KEY
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.components import database, party_management
from payout_manager_testing.topic import Record, TopicReader
from payout_manager_testing.world import World
from support.books import dsn
from support.serving import Served, serve


def sequences(records: Iterable[Record], payout_ids: Iterable[str] | None = None) -> dict[str, list[int]]:
    """Per payout, the sequence ids in the order the topic holds them."""
    wanted = None if payout_ids is None else set(payout_ids)
    result: dict[str, list[int]] = {}
    for record in records:
        if wanted is None or record.key in wanted:
            result.setdefault(record.key, []).append(record.event.sequence_id)
    return result


def applied(received: Sequence[int]) -> list[int]:
    """What a consumer that keeps the highest sequence id it applied would apply (SPEC 3)."""
    highest = 0
    result = []
    for sequence_id in received:
        if sequence_id > highest:
            result.append(sequence_id)
            highest = sequence_id
    return result


def assert_complete_and_ordered(
    records: list[Record], expected: dict[str, int], *, repeats_allowed: bool
) -> None:
    """Every expected event arrived; per payout, first arrivals run 1..n with no gap."""
    received = sequences(records, expected)
    missing = {
        payout_id: n
        for payout_id, n in expected.items()
        if set(received.get(payout_id, [])) != set(range(1, n + 1))
    }
    assert not missing, f"{len(missing)} payouts lack events, e.g. {next(iter(missing.items()))}"
    out_of_order = {p: s for p, s in received.items() if applied(s) != list(range(1, expected[p] + 1))}
    assert not out_of_order, f"out of order: {dict(list(out_of_order.items())[:3])}"
    if not repeats_allowed:
        repeated = {p: s for p, s in received.items() if len(s) != expected[p]}
        assert not repeated, f"repeated: {dict(list(repeated.items())[:3])}"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner), as 32 unsigned bits."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def java_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def events_command(
    env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`payout-manager events ARGS` with these PM_* settings, to its end; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "payout_manager", "events", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def by_payout(stdout: str) -> dict[str, list[dict[str, Any]]]:
    """The JSON lines `payout-manager events` printed, per payout in the order printed."""
    result: dict[str, list[dict[str, Any]]] = {}
    for line in stdout.splitlines():
        event = json.loads(line)
        result.setdefault(event["payout_id"], []).append(event)
    return result


def stored_events(
    payouts: payout_manager_pb2_grpc.PayoutManagementStub, payout_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per payout, its events as GetPayoutEvents returns them, as `payout-manager events` prints them."""
    return {
        payout_id: [
            json_format.MessageToDict(event, preserving_proto_field_name=True)
            for event in payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
        ]
        for payout_id in payout_ids
    }


def records_on_topic(bootstrap_servers: str, topic: str) -> int:
    """How many records the topic holds (0 when there is no such topic), over a PLAINTEXT listener."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": f"pm-test-{uuid.uuid4().hex[:12]}"}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        total = 0
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def outbox_size(database_url: str) -> int:
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM payout_event_outbox")
        row = cursor.fetchone()
        return int(row[0]) if row else 0


def wait_for_empty_outbox(database_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := outbox_size(database_url)) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left} events still unpublished after {timeout} s")
        time.sleep(0.1)


def relay_leaders(database_url: str, key: int = LEADER_LOCK_KEY) -> int:
    """How many sessions hold the relay's leadership lock (or another job's `key`) on this database."""
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s AND objid = %s AND objsubid = 1",
            (key >> 32, key & 0xFFFFFFFF),
        )
        row = cursor.fetchone()
        return int(row[0]) if row else 0


def wait_for_leader(database_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while relay_leaders(database_url) != 1:
        if time.monotonic() > deadline:
            raise TimeoutError("no relay took the leadership")
        time.sleep(0.05)


@dataclass
class ServedWithStub(Served):
    """A serve process of the stack, with a channel and a PayoutManagement stub to it."""

    channel: grpc.Channel
    payouts: payout_manager_pb2_grpc.PayoutManagementStub

    def close(self) -> int:
        self.channel.close()
        return self.process.stop()


@dataclass
class Stack:
    """A database, a PartyManagement server and a topic of their own, and `serve` processes on them."""

    postgres_server_url: str
    bootstrap_servers: str
    directory: Path
    # PM_KAFKA_SECURITY_PROTOCOL and the like, for `serve` and `events` alike.
    kafka_security: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    topic: str = ""
    servers: list[ServedWithStub] = field(default_factory=list)
    _world: World | None = None

    def __post_init__(self) -> None:
        # The testing kit's database and reference PartyManagement, as its own stacks start them.
        self._resources = ExitStack()
        self.database_url = self._resources.enter_context(database(self.postgres_server_url, "pm_events"))
        self.topic = f"pm-events-payout-{urlsplit(self.database_url).path.lstrip('/')}"
        self._party_management = self._resources.enter_context(party_management(self.directory))

    def serve(
        self,
        workers: int = 2,
        *,
        env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> ServedWithStub:
        """`serve` on the stack; `credentials` for a TLS channel (the stack's world uses the first)."""
        env = {
            "PM_DATABASE_URL": self.database_url,
            "PM_PARTY_MANAGEMENT_ADDRESS": self._party_management.address,
            **self.events_env(),
            "PM_SHUTDOWN_GRACE": "5",
            **(env or {}),
        }
        process = serve(
            workers, env, self.directory / f"serve-{len(self.servers)}.log", credentials=credentials
        )
        channel = (
            grpc.insecure_channel(process.address)
            if credentials is None
            else grpc.secure_channel(process.address, credentials)
        )
        served = ServedWithStub(
            process.process, process.address, channel, payout_manager_pb2_grpc.PayoutManagementStub(channel)
        )
        self.servers.append(served)
        return served

    def events_env(self) -> dict[str, str]:
        """The settings that reach the stack's topic, for `serve` and for `payout-manager events`."""
        return {
            "PM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "PM_KAFKA_TOPIC": self.topic,
            **self.kafka_security,
        }

    @property
    def party_management_address(self) -> str:
        return self._party_management.address

    @property
    def world(self) -> World:
        if self._world is None:
            assert self.servers, "start a server first"
            self._world = World(
                accounter_pb2_grpc.AccounterStub(self.servers[0].channel),
                self._party_management.config_path,
            )
        return self._world

    def reader(self) -> TopicReader:
        return TopicReader(self.bootstrap_servers, self.topic)

    def published(self, expected: dict[str, int], timeout: float = 60.0) -> list[Record]:
        """Waits until the outbox is empty, then reads the topic until `expected` is all there."""
        wait_for_empty_outbox(self.database_url, timeout)
        reader = self.reader()
        try:
            return reader.read_events_of(expected, timeout)
        finally:
            reader.close()

    def close(self) -> None:
        for served in self.servers:
            served.close()
        self._resources.close()
