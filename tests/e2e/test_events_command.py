"""`payout-manager events`: the topic as JSON lines, for people and for the teams downstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from support.events import Stack, by_payout, stored_events
from support.events import events_command as run_events_command
from support.payouts import confirm, create

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka

TIMEOUT = 120


@pytest.fixture(scope="module")
def published(
    postgres_server_url: str, kafka: TestKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, dict[str, list[dict[str, Any]]]]]:
    """A stack whose topic holds two payouts' events (3 in all) and one record that is no event."""
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path_factory.mktemp("events-command"))
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=1_000_000)
    confirmed = create(served.payouts, shop.party_id, shop.shop_id, 1_000, metadata={"k": "v"}).payout_id
    confirm(served.payouts, confirmed)
    created = create(served.payouts, shop.party_id, shop.shop_id, 2_000).payout_id
    reader = stack.reader()
    reader.read_events_of({confirmed: 2, created: 1}, timeout=60)
    reader.close()

    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(
        stack.topic, key=b"stranger", value=b"\x00 not protobuf", headers=[("message-type", b"x")]
    )
    assert producer.flush(30) == 0

    expected = stored_events(served.payouts, (confirmed, created))
    yield stack, expected
    stack.close()


def events_command(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return run_events_command(stack.events_env(), *args, timeout=TIMEOUT)


def test_prints_every_event_as_one_json_line_and_skips_what_is_no_event(
    published: tuple[Stack, dict[str, list[dict[str, Any]]]],
) -> None:
    stack, expected = published

    run = events_command(stack, "--from-beginning", "--idle-timeout", "8")

    assert run.returncode == 0, run.stderr
    assert by_payout(run.stdout) == expected
    # Money stays exact: int64 amounts are JSON strings, never floats.
    first = json.loads(run.stdout.splitlines()[0])
    assert isinstance(first["payout"]["amount"], str)
    assert "skipped partition" in run.stderr and "message-type" in run.stderr


def test_payout_id_keeps_one_payouts_events(published: tuple[Stack, dict[str, list[dict[str, Any]]]]) -> None:
    stack, expected = published
    payout_id = next(p for p, events in expected.items() if len(events) == 2)

    run = events_command(stack, "--from-beginning", "--payout-id", payout_id, "--idle-timeout", "8")

    assert run.returncode == 0, run.stderr
    assert by_payout(run.stdout) == {payout_id: expected[payout_id]}


def test_a_named_group_resumes_where_it_stopped(
    published: tuple[Stack, dict[str, list[dict[str, Any]]]],
) -> None:
    stack, expected = published
    group = f"resume-{stack.topic}"

    first = events_command(stack, "--from-beginning", "--group", group, "--max-events", "1")
    rest = events_command(stack, "--from-beginning", "--group", group, "--idle-timeout", "8")

    assert first.returncode == rest.returncode == 0, first.stderr + rest.stderr
    assert len(first.stdout.splitlines()) == 1
    combined = by_payout(first.stdout + rest.stdout)
    assert {p: sorted(e["sequence_id"] for e in events) for p, events in combined.items()} == {
        p: sorted(e["sequence_id"] for e in events) for p, events in expected.items()
    }


def test_without_from_beginning_only_events_after_the_start_print(
    published: tuple[Stack, dict[str, list[dict[str, Any]]]],
) -> None:
    """Runs last in this module: it adds events of its own to the topic."""
    stack, expected = published
    command = subprocess.Popen(
        [sys.executable, "-m", "payout_manager", "events", "--max-events", "1", "--idle-timeout", "60"],
        env={**os.environ, **stack.events_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    fresh: list[str] = []
    try:
        # The command joins its group at some moment; events keep coming until it prints one.
        while command.poll() is None and len(fresh) < 120:
            event = pb.Event(event_id=str(uuid.uuid4()), payout_id=f"fresh-{uuid.uuid4()}", sequence_id=1)
            producer.produce(
                stack.topic,
                key=event.payout_id.encode(),
                value=event.SerializeToString(),
                headers=[("message-type", b"payout_manager.v1.Event")],
            )
            assert producer.flush(10) == 0
            fresh.append(event.payout_id)
            time.sleep(0.5)
        stdout, stderr = command.communicate(timeout=TIMEOUT)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()

    assert command.returncode == 0, stderr
    printed = [json.loads(line)["payout_id"] for line in stdout.splitlines()]
    assert len(printed) == 1
    assert printed[0] in fresh and printed[0] not in expected
