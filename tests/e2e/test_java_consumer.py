"""A consumer in another language: Java, compiled from proto/ itself, reading the topic in a group.

clients/java-events-consumer builds with its pinned Maven (the wrapper), protobuf-java, protoc (by
io.github.ascopes:protobuf-maven-plugin, from Maven Central) and kafka-clients, as a JVM team would.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.events import Stack
from support.payouts import cancel, confirm, create

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka

PROJECT = Path(__file__).resolve().parents[2] / "clients" / "java-events-consumer"
BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def consumer_jar() -> Path:
    if shutil.which("java") is None:
        pytest.skip("no JDK here: the Java consumer cannot be built")
    subprocess.run(["./mvnw", "-q", "-B", "package"], cwd=PROJECT, check=True, timeout=BUILD_TIMEOUT)
    return PROJECT / "target" / "events-consumer.jar"


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def test_the_java_consumer_sees_exactly_the_events_get_payout_events_returns_in_order(
    stack: Stack, consumer_jar: Path
) -> None:
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=1_000_000)
    stub = served.payouts
    reverted = create(stub, shop.party_id, shop.shop_id, 10_000).payout_id
    confirm(stub, reverted)
    cancel(stub, reverted, "returned by the bank")
    cancelled = create(stub, shop.party_id, shop.shop_id, 20_000).payout_id
    cancel(stub, cancelled, "merchant asked")

    consumer = subprocess.run(
        [
            "java",
            "-jar",
            str(consumer_jar),
            stack.bootstrap_servers,
            stack.topic,
            f"java-{uuid.uuid4().hex}",
            "5",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert consumer.returncode == 0, consumer.stderr
    lines = [tuple(line.split("\t")) for line in consumer.stdout.splitlines()]
    for payout_id in (reverted, cancelled):
        served_events = stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events
        expected = [
            (e.payout_id, str(e.sequence_id), pb.PayoutStatus.Name(e.payout.status), str(e.payout.amount))
            for e in served_events
        ]
        assert [line for line in lines if line[0] == payout_id] == expected
    assert len(lines) == 5
