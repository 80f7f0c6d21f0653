"""The image's HEALTHCHECK: exit 0 when `serve` here answers grpc.health.v1 Check with SERVING.

It asks 127.0.0.1 on the port of PM_GRPC_ADDRESS (the address `serve` listens on), or HOST:PORT if given.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from payout_manager import settings

TIMEOUT = 3.0


def main(argv: list[str]) -> int:
    port = settings.load().grpc_address.rpartition(":")[2]
    address = argv[0] if argv else f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
        except grpc.RpcError as error:
            print(f"{address}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
