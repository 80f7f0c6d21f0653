"""The quick start's first command, the demo (`python -m local_stack`), from an empty data directory.

With a JDK it starts a local Kafka and publishes; without one it says so and serves anyway, the
events waiting in the database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from support.demo import start_demo
from support.payouts import confirm, create

from local_stack.kafka import java_available
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.processes import free_port


def path_without(tmp_path: Path, *programs: str) -> str:
    """A PATH with every program of this one but `programs` (links in a directory of their own)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory) / name
            link = bin_dir / name
            if name not in programs and not link.exists() and os.access(target, os.X_OK) and target.is_file():
                link.symlink_to(target)
    return str(bin_dir)


def create_and_confirm(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = payout_manager_pb2_grpc.PayoutManagementStub(channel)
        payout_id = create(stub, "party-1", "shop-1", 10_000).payout_id
        confirm(stub, payout_id)
        return payout_id


@pytest.mark.skipif(not java_available(), reason="no JDK here: the demo's Kafka cannot start")
def test_the_demo_starts_kafka_and_its_events_reach_the_events_command(tmp_path: Path) -> None:
    process, address, kafka_port = start_demo(tmp_path)
    try:
        payout_id = create_and_confirm(address)
        events = subprocess.run(
            [sys.executable, "-m", "payout_manager", "events", "--from-beginning", "--max-events", "2"],
            env={**os.environ, "PM_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        code = process.stop(signal.SIGINT, timeout=60)

    assert events.returncode == 0, events.stderr
    assert [line.count(f'"payout_id":"{payout_id}"') > 0 for line in events.stdout.splitlines()] == [
        True,
        True,
    ]
    output = process.output()
    assert f"Kafka             127.0.0.1:{kafka_port}" in output
    assert "payout-manager events --from-beginning" in output
    assert code == 0, output
    # Ctrl-C took the broker down with it.
    assert not broker_listening(kafka_port)


def test_without_a_jdk_the_demo_serves_and_says_events_wait_in_the_database(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    process, address, _ = start_demo(
        tmp_path, {"PATH": path_without(tmp_path, "java"), "PM_METRICS_ADDRESS": metrics}
    )
    try:
        payout_id = create_and_confirm(address)
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        with grpc.insecure_channel(address) as channel:
            stored = (
                payout_manager_pb2_grpc.PayoutManagementStub(channel)
                .GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id))
                .events
            )
    finally:
        code = process.stop(signal.SIGINT, timeout=60)

    assert [e.sequence_id for e in stored] == [1, 2]
    assert 'pm_payouts{status="CONFIRMED"} 1.0' in scraped
    assert f"http://{metrics}/metrics" in process.output()
    assert "no JDK here: events wait in the database" in process.output()
    assert code == 0, process.output()


def broker_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
