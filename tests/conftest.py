"""The PostgreSQL every test shares: see payout_manager_testing.postgres for how it is chosen."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import settings as hypothesis_settings
from support.serving import start_serve  # noqa: F401 (a fixture: importing it here registers it)

from local_stack.kafka import LocalKafkaCluster
from local_stack.postgres import LocalPostgres, create_database
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.components import party_management as kit_party_management
from payout_manager_testing.kafka import TestKafka, local_kafka_cluster, session_kafka
from payout_manager_testing.kafka import chosen_source as chosen_kafka_source
from payout_manager_testing.postgres import (
    TEST_DATABASE,
    PostgresSource,
    chosen_source,
    fresh_database_url,  # noqa: F401 (a fixture: importing it here registers it)
    postgres_server,
    scratch_postgres,
)
from payout_manager_testing.processes import (
    Process,
    free_port,
    signal_name,
    wait_until_serving,
)
from payout_manager_testing.world import World

# CI explores the same examples on every run, so a red build is about the change under test;
# developers' runs stay random and keep finding new cases.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header() -> list[str]:
    return [f"postgresql: {chosen_source().value}", f"kafka: {chosen_kafka_source().value}"]


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    """The embedded PostgreSQL the tests share, when it is the chosen one."""
    with scratch_postgres("pm-test-postgres-") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of the chosen server's default database, before any migration (the kit's choice)."""
    if chosen_source() is PostgresSource.EMBEDDED:
        # Requested by name so that the tests that need the server itself share this one.
        server: LocalPostgres = request.getfixturevalue("local_postgres")
        yield server.url
    else:
        with postgres_server() as url:
            yield url


@pytest.fixture(scope="session")
def kafka() -> Iterator[TestKafka]:
    """The Kafka every test shares, started on first use (chosen by payout_manager_testing.kafka)."""
    with session_kafka() as broker:
        yield broker


@pytest.fixture(scope="module")
def module_kafka_cluster() -> Iterator[LocalKafkaCluster]:
    """A three-broker cluster for one module's tests: three JVMs are too heavy to keep for a session."""
    with local_kafka_cluster() as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster(module_kafka_cluster: LocalKafkaCluster) -> LocalKafkaCluster:
    """The module's cluster with every broker running and every replica in sync, whatever the test
    before took down."""
    for index, broker in enumerate(module_kafka_cluster.brokers):
        if not broker.running:
            module_kafka_cluster.restart(index)
    module_kafka_cluster.wait_until_replicated()
    return module_kafka_cluster


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> str:
    """URL of the test database, migrated to the newest schema."""
    if chosen_source() is PostgresSource.ENVIRONMENT:
        url = postgres_server_url
    else:
        url = create_database(postgres_server_url, TEST_DATABASE)
    # Imported here so that tests which need no schema do not depend on the migrations.
    from payout_manager.storage import migrations

    migrations.upgrade(url)
    return url


@dataclass(frozen=True)
class PartyManagementServer:
    address: str
    config_path: Path


@pytest.fixture(scope="session")
def party_management(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartyManagementServer]:
    """The reference PartyManagement server, a real process (the kit's); World writes its config."""
    with kit_party_management(tmp_path_factory.mktemp("party-management")) as server:
        yield PartyManagementServer(server.address, server.config_path)


@pytest.fixture(scope="session")
def server_address(
    database_url: str, party_management: PartyManagementServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`payout-manager serve --workers 2`, a real server on real PostgreSQL."""
    address = f"127.0.0.1:{free_port()}"
    process = Process(
        ["serve", "--workers", "2", "--address", address],
        {"PM_DATABASE_URL": database_url, "PM_PARTY_MANAGEMENT_ADDRESS": party_management.address},
        tmp_path_factory.mktemp("serve") / "output.log",
    )
    wait_until_serving(address, process)
    yield address
    code = process.stop()
    assert code == 0, f"serve exited with {signal_name(code)}:\n{process.output()}"


@pytest.fixture(scope="session")
def channel(server_address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server_address) as channel:
        yield channel


@pytest.fixture(scope="session")
def payouts(channel: grpc.Channel) -> payout_manager_pb2_grpc.PayoutManagementStub:
    return payout_manager_pb2_grpc.PayoutManagementStub(channel)


@pytest.fixture(scope="session")
def accounter(channel: grpc.Channel) -> accounter_pb2_grpc.AccounterStub:
    return accounter_pb2_grpc.AccounterStub(channel)


@pytest.fixture(scope="session")
def world(accounter: accounter_pb2_grpc.AccounterStub, party_management: PartyManagementServer) -> World:
    return World(accounter, party_management.config_path)


# The testing kit's fixtures (payout_manager_testing.plugin) on this session's PostgreSQL and Kafka,
# rather than a second of each.
@pytest.fixture(scope="session")
def payout_manager_postgres_url(postgres_server_url: str) -> str:
    return postgres_server_url


@pytest.fixture(scope="session")
def payout_manager_kafka_servers(kafka: TestKafka) -> str:
    return kafka.bootstrap_servers
