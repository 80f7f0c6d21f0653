"""The demo (`python -m local_stack`) in a subprocess, on free ports and a data directory of its own."""

from __future__ import annotations

import sys
from pathlib import Path

from support.processes import Process, free_port, wait_until_serving

# The first start may resolve Kafka's jars with mvn.
START_TIMEOUT = 240.0


def start_demo(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Process, str, int]:
    address = f"127.0.0.1:{free_port()}"
    kafka_port = free_port()
    process = Process(
        ["--data-dir", str(tmp_path / "demo"), "--kafka-port", str(kafka_port)],
        {
            "PM_GRPC_ADDRESS": address,
            "PM_PARTY_MANAGEMENT_ADDRESS": f"127.0.0.1:{free_port()}",
            "PM_KAFKA_BOOTSTRAP_SERVERS": "",
            "PM_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            **(env or {}),
        },
        tmp_path / "demo.log",
        program=(sys.executable, "-m", "local_stack"),
    )
    wait_until_serving(address, process, timeout=START_TIMEOUT)
    return process, address, kafka_port
