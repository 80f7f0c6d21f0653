"""Waiting for a server to be ready, through the standard gRPC health service."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_until_serving(
    address: str,
    *,
    timeout: float,
    exited: Callable[[], int | None] = lambda: None,
    service: str = "",
    in_a_row: int = 6,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Waits until `address` answers SERVING `in_a_row` times in a row, each on a new connection.

    Several answers: with `serve --workers N` the kernel hands each new connection to any worker.
    `exited` returns the server process's exit code once it has stopped (like Popen.poll): then
    waiting is pointless and RuntimeError says so. TimeoutError when `timeout` seconds pass.
    `credentials`: TLS (and a client certificate) for a server that speaks it.
    """
    deadline = time.monotonic() + timeout
    answered = 0
    while answered < in_a_row:
        code = exited()
        if code is not None:
            raise RuntimeError(f"the server at {address} exited with {code}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} did not become SERVING within {timeout:g} s")
        if is_serving(address, service=service, credentials=credentials):
            answered += 1
        else:
            answered = 0
            time.sleep(0.1)


def is_serving(
    address: str,
    *,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    timeout: float = 1.0,
) -> bool:
    """Whether a new connection to `address` answers a health check SERVING within `timeout` seconds."""
    channel = (
        grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    )
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
