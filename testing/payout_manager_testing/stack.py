"""A running payout manager for integration tests, without pytest: `PayoutManagerStack.start()`.

    with PayoutManagerStack.start(Path("/tmp/stack"), kafka_bootstrap_servers=servers) as stack:
        shop = stack.new_shop(funds=1_000_000)
        payout = stack.payouts().CreatePayout(...)

What it starts: a database of its own on the given PostgreSQL server, migrated; the reference
PartyManagement server on a config the stack writes as shops are added; `payout-manager serve`
publishing to a topic of its own. With `security`, serve speaks mutual TLS with the given access
policy, and the stack makes the CA and every certificate. When the block ends, every process it
started is stopped (and killed if it will not stop) and its database is dropped.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from local_stack.certificates import Authority
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager.storage.audit import audit_books
from payout_manager_testing.components import database, party_management
from payout_manager_testing.processes import Process, free_port, wait_until_serving
from payout_manager_testing.topic import TopicReader
from payout_manager_testing.world import Shop, World

# The identity the stack's own calls use under a policy (funding shops needs the Accounter).
KIT_PRINCIPAL = "spiffe://payout-manager-testing/kit"
ALL_METHODS = ["payout_manager.v1.PayoutManagement/*", "accounter.v1.Accounter/*"]


@dataclass(frozen=True)
class Security:
    """Serve over mutual TLS; `policy` (SPEC 5's JSON as a dict) names the callers and their roles.

    The stack adds its own principal, allowed everything, to fund shops. Clients get certificates
    from `PayoutManagerStack.credentials(identity)`.
    """

    policy: dict[str, Any] = field(default_factory=lambda: {"roles": {}, "principals": []})


@dataclass
class PayoutManagerStack:
    """What a test talks to: serve's address, its database, its topic, and helpers."""

    address: str
    database_url: str
    bootstrap_servers: str | None
    topic: str
    directory: Path
    # The reference PartyManagement server's config, which new_shop writes.
    party_management_config: Path
    _authority: Authority | None = field(default=None, repr=False)
    _channels: list[grpc.Channel] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._world = World(self.accounter(), self.party_management_config)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        directory: Path,
        *,
        postgres_server_url: str,
        kafka_bootstrap_servers: str | None = None,
        workers: int = 2,
        security: Security | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[PayoutManagerStack]:
        """Starts the stack on that PostgreSQL server (and Kafka, if given); stops all of it after."""
        with (
            database(postgres_server_url) as database_url,
            party_management(directory) as party,
            contextlib.ExitStack() as resources,
        ):
            topic = f"pm-events-payout-{database_url.rpartition('/')[2]}"
            serve_env = {
                "PM_DATABASE_URL": database_url,
                "PM_PARTY_MANAGEMENT_ADDRESS": party.address,
                "PM_KAFKA_TOPIC": topic,
                "PM_SHUTDOWN_GRACE": "5",
                **(
                    {"PM_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers} if kafka_bootstrap_servers else {}
                ),
            }
            authority = None
            if security is not None:
                authority = Authority("payout-manager-testing CA")
                serve_env |= _secured(directory, authority, security)
            address = f"127.0.0.1:{free_port()}"
            serve = Process(
                ["serve", "--workers", str(workers), "--address", address],
                {**serve_env, **(env or {})},
                directory / "serve.log",
            )
            resources.callback(serve.stop, timeout=20)
            wait_until_serving(address, serve, timeout=60, credentials=_credentials(authority, KIT_PRINCIPAL))
            stack = cls(
                address, database_url, kafka_bootstrap_servers, topic, directory, party.config_path, authority
            )
            resources.callback(stack.close)
            yield stack

    def credentials(self, identity: str) -> grpc.ChannelCredentials | None:
        """TLS credentials with a client certificate naming `identity` (its URI SAN, as SPEC 5
        reads it); None when the stack serves plaintext."""
        return _credentials(self._authority, identity)

    def channel(self, identity: str = KIT_PRINCIPAL) -> grpc.Channel:
        """A new channel to serve (as `identity` when secured); the stack closes it at the end."""
        credentials = self.credentials(identity)
        channel = (
            grpc.insecure_channel(self.address)
            if credentials is None
            else grpc.secure_channel(self.address, credentials)
        )
        self._channels.append(channel)
        return channel

    def payouts(self, identity: str = KIT_PRINCIPAL) -> payout_manager_pb2_grpc.PayoutManagementStub:
        return payout_manager_pb2_grpc.PayoutManagementStub(self.channel(identity))

    def accounter(self, identity: str = KIT_PRINCIPAL) -> accounter_pb2_grpc.AccounterStub:
        return accounter_pb2_grpc.AccounterStub(self.channel(identity))

    def new_shop(self, funds: int = 0, *, currency: str = "RUB", party_id: str | None = None) -> Shop:
        """A new party with one shop and its accounts in PartyManagement, `funds` (minor units) put
        on its settlement account through the Accounter API, as a back office funds a merchant."""
        return self._world.add_shop(funds, currency=currency, party_id=party_id)

    def topic_reader(self) -> TopicReader:
        """A consumer of the stack's topic from its beginning, in a group of its own; close it."""
        if self.bootstrap_servers is None:
            raise RuntimeError("the stack has no Kafka: start it with kafka_bootstrap_servers")
        return TopicReader(self.bootstrap_servers, self.topic)

    def audit(self) -> list[str]:
        """What is wrong with the books: unbalanced currencies, plans that disagree with their
        payouts, gaps in events. Empty when the books hold."""
        return audit_books(self.database_url)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


def _credentials(authority: Authority | None, identity: str) -> grpc.ChannelCredentials | None:
    if authority is None:
        return None
    client = authority.issue(identity.rpartition("/")[2] or identity, uris=(identity,))
    return grpc.ssl_channel_credentials(authority.cert_pem, client.key_pem, client.cert_pem)


def _secured(directory: Path, authority: Authority, security: Security) -> dict[str, str]:
    """Serve's settings for mutual TLS with the policy, the kit's principal added to it."""
    cert, key = authority.server().write(directory, "server")
    ca = directory / "ca.crt"
    ca.write_bytes(authority.cert_pem)
    policy = json.loads(json.dumps(security.policy))
    policy.setdefault("roles", {})["payout-manager-testing"] = ALL_METHODS
    policy.setdefault("principals", []).append({"id": KIT_PRINCIPAL, "roles": ["payout-manager-testing"]})
    policy_file = directory / "policy.json"
    policy_file.write_text(json.dumps(policy))
    return {
        "PM_TLS_CERT_FILE": str(cert),
        "PM_TLS_KEY_FILE": str(key),
        "PM_TLS_CLIENT_CA_FILE": str(ca),
        "PM_AUTH_POLICY_FILE": str(policy_file),
    }
