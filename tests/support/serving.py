"""`payout-manager serve` processes of the tests, started by the `start_serve` fixture."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest

from payout_manager_testing.processes import Process, free_port, wait_until_serving


class PartyManagementServer(Protocol):
    """The session's reference PartyManagement (the `party_management` fixture)."""

    @property
    def address(self) -> str: ...

    @property
    def config_path(self) -> Path: ...


@dataclass
class Served:
    """A `payout-manager serve` process of one test and the address it listens on."""

    process: Process
    address: str

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def stop(self, timeout: float = 30.0) -> int:
        return self.process.stop(timeout=timeout)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.process.output():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged:\n{self.process.output()}")
            time.sleep(0.05)

    def wait_for_workers(self, workers: int, timeout: float = 30.0) -> None:
        """Until each of `workers` worker processes has logged that it serves (at PM_LOG_LEVEL INFO)."""
        deadline = time.monotonic() + timeout
        while self.process.output().count("serving on port") < workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {workers} workers serving:\n{self.process.output()}")
            time.sleep(0.05)


def serve(
    workers: int,
    env: dict[str, str],
    log_path: Path,
    *,
    started: list[Served] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Served:
    """`serve --workers N` on a free port, once it is SERVING; `started` gets it before the wait.

    One SERVING answer on the shared port comes from whichever worker the kernel picked: a test
    that needs every worker up waits for them (`Served.wait_for_workers`)."""
    address = f"127.0.0.1:{free_port()}"
    served = Served(
        Process(["serve", "--workers", str(workers), "--address", address], env, log_path), address
    )
    if started is not None:
        started.append(served)
    wait_until_serving(address, served.process, credentials=credentials)
    return served


def log_lines(output: str) -> list[dict[str, Any]]:
    """Every line of a process's output as the JSON object each log line must be."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def run_to_exit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`payout-manager ARGS` run to its end, for settings that must stop it at start."""
    return subprocess.run(
        [sys.executable, "-m", "payout_manager", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def run_serve(env: dict[str, str], address: str) -> subprocess.CompletedProcess[str]:
    """`serve` on `address` run to its end: its exit code and output."""
    return run_to_exit(["serve", "--address", address], env)


class StartServe(Protocol):
    def __call__(
        self,
        workers: int = 1,
        *,
        party_management_address: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Served: ...


@pytest.fixture
def start_serve(
    database_url: str, party_management: PartyManagementServer, tmp_path: Path
) -> Iterator[StartServe]:
    """Starts `serve --workers N` on a free port and waits until it is SERVING; stops it afterwards."""
    started: list[Served] = []

    def start(
        workers: int = 1,
        *,
        party_management_address: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Served:
        served = serve(
            workers,
            {
                "PM_DATABASE_URL": database_url,
                "PM_PARTY_MANAGEMENT_ADDRESS": party_management_address or party_management.address,
                **(env or {}),
            },
            tmp_path / f"serve-{len(started)}.log",
            started=started,
        )
        return served

    yield start
    for served in started:
        # Process.stop kills what is still running after the timeout; the test has said why.
        with contextlib.suppress(TimeoutError):
            served.stop(timeout=10)
