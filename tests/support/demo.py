"""The demo (`python -m local_stack`) in a subprocess, on free ports and a data directory of its own."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc

from local_stack.secure import SecureFiles
from payout_manager_testing.processes import Process, free_port, wait_until_serving

# The first start may resolve Kafka's jars with mvn.
START_TIMEOUT = 240.0


def _treasury_credentials(files: SecureFiles, process: Process, timeout: float) -> grpc.ChannelCredentials:
    """Credentials of the secured demo's treasury, once the demo has made its files."""
    deadline = time.monotonic() + timeout
    while not files.policy.exists():
        if time.monotonic() > deadline or process.popen.poll() is not None:
            raise TimeoutError(f"the secured demo made no {files.policy}:\n{process.output()}")
        time.sleep(0.1)
    return files.credentials("treasury")


def start_demo(
    tmp_path: Path, env: dict[str, str] | None = None, *, secure: bool = False
) -> tuple[Process, str, int]:
    """The demo, serving (`secure`: over mutual TLS with its policy, files in DATA_DIR/secure)."""
    address = f"127.0.0.1:{free_port()}"
    kafka_port = free_port()
    data_dir = tmp_path / "demo"
    process = Process(
        ["--data-dir", str(data_dir), "--kafka-port", str(kafka_port), *(["--secure"] if secure else [])],
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
    credentials = (
        _treasury_credentials(SecureFiles(data_dir / "secure"), process, START_TIMEOUT) if secure else None
    )
    wait_until_serving(address, process, timeout=START_TIMEOUT, credentials=credentials)
    return process, address, kafka_port
