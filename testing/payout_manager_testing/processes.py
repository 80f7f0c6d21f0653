"""Real processes for the end-to-end tests: the reference PartyManagement server and `serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from local_stack.ports import free_port
from payout_manager.api import health

__all__ = ["Process", "free_port", "signal_name", "wait_until_listening", "wait_until_serving"]


class Process:
    """A `payout-manager` subprocess with its output in a log file."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        program: Sequence[str] = (sys.executable, "-m", "payout_manager"),
        cwd: Path | None = None,
    ) -> None:
        """`program` is how to run payout-manager: by default this venv's, from the source tree."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            [*program, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Sends `sig` and returns the exit code; TimeoutError with the output's end if the process
        did not exit within `timeout` seconds (it is killed then)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = "\n".join(self.output().splitlines()[-40:])
            raise TimeoutError(
                f"{self.popen.args!r} did not exit within {timeout:.0f} s of {sig.name}:\n{tail}"
            ) from None
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
            self._log.close()
        return code


def wait_until_serving(
    address: str,
    process: Process,
    timeout: float = 30.0,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Waits until `address` answers a health check SERVING on several fresh connections."""
    try:
        health.wait_until_serving(
            address, timeout=timeout, exited=process.popen.poll, service=service, credentials=credentials
        )
    except (RuntimeError, TimeoutError) as error:
        raise type(error)(f"{error}:\n{process.output()}") from None


def wait_until_listening(
    address: str,
    process: Process,
    timeout: float = 30.0,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Waits until a gRPC server at `address` accepts connections (TLS ones with `credentials`)."""
    with (
        grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    ) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"{address} did not listen:\n{process.output()}") from None
    if process.popen.poll() is not None:
        raise RuntimeError(f"process exited with {process.popen.returncode}:\n{process.output()}")


def signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else str(code)
