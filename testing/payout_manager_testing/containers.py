"""`PayoutManagerContainer`: the payout manager in Docker, for CI that has a Docker engine.

Follows testcontainers' own modules (`testcontainers.community.*`): a `DockerContainer` subclass
with the image as its first argument, `with_*` methods that return the container, a wait
strategy, and `get_*` accessors. It runs the project's image (`docker build -t payout-manager .`):
`migrate`, then `serve`, wired to a `PostgresContainer` and a `KafkaContainer` on a shared network,
and a second container of the same image as the reference PartyManagement server, whose config is
a host directory the kit's `World` writes as shops are added.

    with Network() as network, \\
         PostgresContainer("postgres:18", driver=None).with_network(network) \\
             .with_network_aliases("postgres") as postgres, \\
         KafkaContainer("confluentinc/cp-kafka:7.6.0").with_network(network) \\
             .with_network_aliases("kafka") as kafka, \\
         PayoutManagerContainer(network=network).with_postgres(postgres, "postgres") \\
             .with_kafka("kafka") as payout_manager:
        channel = grpc.insecure_channel(payout_manager.get_address())

This machine has no Docker engine, so only what needs none is tested here: the settings the
container is given (`serve_environment`), and the health wait (`GrpcHealthWaitStrategy`) against a
real local `serve`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from payout_manager.api.health import is_serving
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.world import Shop, World

IMAGE = "payout-manager:latest"
GRPC_PORT = 8022
PARTY_MANAGEMENT_PORT = 8023
PARTY_MANAGEMENT_ALIAS = "party-management"
# Where the reference server's config directory is mounted in its container.
CONFIG_DIR = "/etc/payout-manager"
# KafkaContainer's listener for containers on its network (testcontainers' BROKER listener).
KAFKA_NETWORK_PORT = 9092


class PostgresLike(Protocol):
    """What the wiring needs of a PostgresContainer (testcontainers.community.postgres)."""

    username: str
    password: str
    dbname: str


@dataclass(frozen=True)
class Wiring:
    """Where serve finds its neighbours, as names on the containers' network."""

    database_url: str
    kafka_bootstrap_servers: str | None = None
    party_management_address: str = f"{PARTY_MANAGEMENT_ALIAS}:{PARTY_MANAGEMENT_PORT}"


def postgres_url(postgres: PostgresLike, alias: str, port: int = 5432) -> str:
    """The URL of a PostgresContainer as another container on its network reaches it."""
    return f"postgresql://{postgres.username}:{postgres.password}@{alias}:{port}/{postgres.dbname}"


def serve_environment(wiring: Wiring, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The PM_* settings of the serve container: on every interface of the container (plaintext is
    allowed there, since only the Docker network and the mapped port reach it), on its wiring."""
    environment = {
        "PM_GRPC_ADDRESS": f"0.0.0.0:{GRPC_PORT}",
        "PM_ALLOW_INSECURE": "true",
        "PM_DATABASE_URL": wiring.database_url,
        "PM_PARTY_MANAGEMENT_ADDRESS": wiring.party_management_address,
        "PM_SHUTDOWN_GRACE": "5",
    }
    if wiring.kafka_bootstrap_servers:
        environment["PM_KAFKA_BOOTSTRAP_SERVERS"] = wiring.kafka_bootstrap_servers
    return {**environment, **(extra or {})}


class GrpcHealthWaitStrategy(WaitStrategy):
    """Ready when gRPC health answers SERVING on the mapped port (as the image's HEALTHCHECK asks)."""

    def __init__(self, port: int = GRPC_PORT) -> None:
        super().__init__()
        self._port = port

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        address = f"{container.get_container_host_ip()}:{container.get_exposed_port(self._port)}"
        if not self._poll(lambda: is_serving(address, timeout=2)):
            raise TimeoutError(f"the payout manager at {address} did not become SERVING")


class PartyManagementContainer(DockerContainer):
    """The reference PartyManagement server from the same image, on a config directory of the host."""

    def __init__(self, image: str = IMAGE, *, config_dir: Path, network: Network, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        config = config_dir / "party-management.json"
        if not config.exists():
            config.write_text(json.dumps({"system_accounts": {}, "parties": []}))
        self.config_path = config
        self.with_network(network).with_network_aliases(PARTY_MANAGEMENT_ALIAS)
        self.with_volume_mapping(str(config_dir), CONFIG_DIR, mode="ro")
        self.with_env("PM_ALLOW_INSECURE", "true")
        self.with_command(
            f"party-management --config {CONFIG_DIR}/{config.name} --address 0.0.0.0:{PARTY_MANAGEMENT_PORT}"
        )


class PayoutManagerContainer(DockerContainer):
    """`payout-manager migrate`, then `serve`, from the project's image, waiting on gRPC health;
    with the reference PartyManagement beside it (started and stopped with it), on `config_dir`."""

    def __init__(
        self,
        image: str = IMAGE,
        *,
        network: Network,
        config_dir: Path | None = None,
        port: int = GRPC_PORT,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, _wait_strategy=GrpcHealthWaitStrategy(port), **kwargs)
        self.port = port
        self._config_dir = config_dir or Path(tempfile.mkdtemp(prefix="payout-manager-config-"))
        self.party_management = PartyManagementContainer(image, config_dir=self._config_dir, network=network)
        self._wiring: Wiring | None = None
        self._extra: dict[str, str] = {}
        self._world: World | None = None
        self._channel: grpc.Channel | None = None
        self.with_network(network).with_exposed_ports(port)
        # The image's entry point is payout-manager; migrate first, then serve as the main process.
        self.with_kwargs(entrypoint="sh")
        self.with_command(["-c", "payout-manager migrate && exec payout-manager serve"])

    def with_postgres(self, postgres: PostgresLike, alias: str) -> PayoutManagerContainer:
        """Serve on this PostgresContainer, which must be on the network under `alias`."""
        self._wiring = Wiring(postgres_url(postgres, alias))
        return self

    def with_kafka(self, alias: str) -> PayoutManagerContainer:
        """Publish to the KafkaContainer on the network under `alias`."""
        if self._wiring is None:
            raise ValueError("wire PostgreSQL first: with_postgres(...)")
        self._wiring = Wiring(self._wiring.database_url, f"{alias}:{KAFKA_NETWORK_PORT}")
        return self

    def with_settings(self, **settings: str) -> PayoutManagerContainer:
        """More PM_* settings, as `with_settings(PM_LOG_LEVEL="DEBUG")`."""
        self._extra.update(settings)
        return self

    def start(self) -> PayoutManagerContainer:
        if self._wiring is None:
            raise ValueError("PayoutManagerContainer needs PostgreSQL: with_postgres(container, alias)")
        for name, value in serve_environment(self._wiring, self._extra).items():
            self.with_env(name, value)
        self.party_management.start()
        try:
            super().start()
        except BaseException:
            self.party_management.stop()
            raise
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        if self._channel is not None:
            self._channel.close()
        try:
            super().stop(force, delete_volume)
        finally:
            self.party_management.stop(force, delete_volume)

    def get_address(self) -> str:
        """HOST:PORT of serve's gRPC from the host."""
        return f"{self.get_container_host_ip()}:{self.get_exposed_port(self.port)}"

    def get_channel(self) -> grpc.Channel:
        """A plaintext channel to serve, closed when the container stops."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.get_address())
        return self._channel

    def payouts(self) -> payout_manager_pb2_grpc.PayoutManagementStub:
        return payout_manager_pb2_grpc.PayoutManagementStub(self.get_channel())

    def accounter(self) -> accounter_pb2_grpc.AccounterStub:
        return accounter_pb2_grpc.AccounterStub(self.get_channel())

    def new_shop(self, funds: int = 0, *, currency: str = "RUB", party_id: str | None = None) -> Shop:
        """As `PayoutManagerStack.new_shop`: a party and shop in the reference server's config, its
        accounts made and funded through the Accounter API."""
        if self._world is None:
            self._world = World(self.accounter(), self.party_management.config_path)
        return self._world.add_shop(funds, currency=currency, party_id=party_id)
