"""The kit's testcontainers module without Docker (none here): its wiring and its health wait.

`PayoutManagerContainer` itself needs a Docker engine to be made at all, so what is tested is what
it is built from: the settings it gives serve, read back by the service's own settings loader,
and the wait strategy, run against a real local `serve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from support.serving import StartServe

from payout_manager import settings
from payout_manager_testing.containers import (
    GRPC_PORT,
    GrpcHealthWaitStrategy,
    Wiring,
    postgres_url,
    serve_environment,
)
from payout_manager_testing.processes import free_port


@dataclass
class Postgres:
    """The three attributes of a PostgresContainer the wiring reads."""

    username: str = "test"
    password: str = "s3cret"
    dbname: str = "test"


def test_serve_is_given_settings_the_service_accepts_on_the_containers_network() -> None:
    wiring = Wiring(postgres_url(Postgres(), "postgres"), "kafka:9092")

    loaded = settings.load(serve_environment(wiring, {"PM_LOG_LEVEL": "DEBUG"}))

    assert loaded.grpc_address == f"0.0.0.0:{GRPC_PORT}" and loaded.allow_insecure
    assert loaded.database_url == "postgresql://test:s3cret@postgres:5432/test"
    assert loaded.kafka_bootstrap_servers == "kafka:9092"
    assert loaded.party_management_address == "party-management:8023"
    assert loaded.log_level == "DEBUG"


def test_without_kafka_serve_is_given_no_broker() -> None:
    environment = serve_environment(Wiring(postgres_url(Postgres(), "db", 6543)))

    assert "PM_KAFKA_BOOTSTRAP_SERVERS" not in environment
    assert settings.load(environment).database_url == "postgresql://test:s3cret@db:6543/test"


@dataclass
class Mapped:
    """A WaitStrategyTarget: where Docker would have mapped the container's port."""

    port: int

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        assert port == GRPC_PORT
        return self.port

    # The rest of the protocol, which the health wait does not use.
    def get_wrapped_container(self) -> Any:
        raise NotImplementedError

    def get_logs(self) -> tuple[bytes, bytes]:
        return b"", b""

    def reload(self) -> None:
        pass

    @property
    def status(self) -> str:
        return "running"


def test_the_health_wait_returns_once_a_real_serve_is_serving(start_serve: StartServe) -> None:
    served = start_serve(1)

    GrpcHealthWaitStrategy().with_startup_timeout(10).wait_until_ready(Mapped(served.port))


def test_the_health_wait_gives_up_on_nothing_serving() -> None:
    strategy = GrpcHealthWaitStrategy().with_startup_timeout(2).with_poll_interval(0.2)

    with pytest.raises(TimeoutError, match="did not become SERVING"):
        strategy.wait_until_ready(Mapped(free_port()))
