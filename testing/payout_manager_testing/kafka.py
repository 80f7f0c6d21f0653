"""Which Kafka the tests run against, chosen once per session.

In order: the broker at $PM_TEST_KAFKA_BOOTSTRAP_SERVERS; Confluent's cp-kafka in Docker (KRaft)
when a Docker engine answers; else Apache Kafka from Maven Central on this machine's JDK
(local_stack.kafka), which needs java, and mvn for the first download.
"""

from __future__ import annotations

import enum
import functools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local_stack.certificates import Authority
from local_stack.kafka import (
    KAFKA_VERSION,
    BrokerCertificate,
    LocalKafka,
    LocalKafkaCluster,
    broker_answers,
    java_available,
)
from payout_manager_testing.postgres import docker_engine_answers

TEST_KAFKA_VARIABLE = "PM_TEST_KAFKA_BOOTSTRAP_SERVERS"
# testcontainers' KafkaContainer (4.15) drives the Confluent images' own start scripts, so the
# apache/kafka images do not work with it; 7.6.0 is the image its own KRaft test runs (Kafka 3.6).
DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"
ANSWER_TIMEOUT = 60.0


class KafkaSource(enum.Enum):
    ENVIRONMENT = f"the broker at ${TEST_KAFKA_VARIABLE}"
    DOCKER = f"{DOCKER_IMAGE} in Docker, KRaft (testcontainers)"
    LOCAL = (
        f"Apache Kafka {KAFKA_VERSION} from Maven Central on this machine's JDK (no Docker engine answered)"
    )


@functools.cache
def chosen_source() -> KafkaSource:
    if os.environ.get(TEST_KAFKA_VARIABLE):
        return KafkaSource.ENVIRONMENT
    if docker_engine_answers():
        return KafkaSource.DOCKER
    return KafkaSource.LOCAL


@dataclass(frozen=True)
class TestKafka:
    """The broker the tests share: where it is, and a way to take it down for a while."""

    __test__ = False  # not a test class, whatever its name

    source: KafkaSource
    bootstrap_servers: str
    _take_down: Callable[[], None] = field(repr=False)
    _bring_back: Callable[[], None] = field(repr=False)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The broker is unreachable inside the block; at its end it answers again at the same address.

        Its topics and messages survive. Skips the test when the broker is not the tests' own.
        """
        self._take_down()
        try:
            yield
        finally:
            self._bring_back()


@contextmanager
def session_kafka() -> Iterator[TestKafka]:
    """Starts the chosen Kafka, if it is not already running elsewhere, and stops it at the end."""
    source = chosen_source()
    if source is KafkaSource.ENVIRONMENT:
        servers = os.environ[TEST_KAFKA_VARIABLE]

        def refuse() -> None:
            pytest.skip(f"cannot take down the broker at ${TEST_KAFKA_VARIABLE} ({servers})")

        yield TestKafka(source, servers, refuse, lambda: None)
    elif source is KafkaSource.DOCKER:
        with _docker_kafka() as kafka:
            yield kafka
    else:
        with _local_kafka() as kafka:
            yield kafka


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    # Like PostgreSQL's, not under pytest's basetemp, which a concurrent run may reset.
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _local_kafka() -> Iterator[TestKafka]:
    with _scratch("pm-test-kafka-") as scratch:
        broker = LocalKafka.start(scratch / "data")
        try:
            yield TestKafka(KafkaSource.LOCAL, broker.bootstrap_servers, broker.stop, broker.restart)
        finally:
            broker.stop()


@contextmanager
def local_kafka_cluster() -> Iterator[LocalKafkaCluster]:
    """Three brokers of their own (Apache Kafka on this JDK, whatever the session's Kafka), one
    process each, in one KRaft quorum; stopped, and their data removed, at the end. Skips the test
    without java."""
    if not java_available():
        pytest.skip("java (and mvn, until the jars are cached) needed for a local Kafka cluster")
    with _scratch("pm-test-kafka-cluster-") as scratch:
        cluster = LocalKafkaCluster.start(scratch / "data")
        try:
            yield cluster
        finally:
            cluster.stop()


@dataclass(frozen=True)
class SecuredKafka:
    """A local broker with PLAINTEXT, SSL and SASL_SSL (SCRAM) listeners, and what a client needs."""

    broker: LocalKafka
    ca_file: Path
    username: str
    password: str = field(repr=False)
    password_file: Path
    # The broker's private key, PEM: what must never show anywhere else.
    key_pem: bytes = field(repr=False)

    def ssl_settings(self) -> dict[str, str]:
        """The PM_KAFKA_* settings that reach the SSL listener."""
        return {
            "PM_KAFKA_BOOTSTRAP_SERVERS": self.broker.ssl_bootstrap_servers,
            "PM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "PM_KAFKA_SSL_CA_FILE": str(self.ca_file),
        }

    def sasl_ssl_settings(
        self, password_file: Path | None = None, mechanism: str = "SCRAM-SHA-512"
    ) -> dict[str, str]:
        """The PM_KAFKA_* settings that reach the SASL_SSL listener as the broker's user."""
        return {
            "PM_KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_ssl_bootstrap_servers,
            "PM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PM_KAFKA_SSL_CA_FILE": str(self.ca_file),
            "PM_KAFKA_SASL_MECHANISM": mechanism,
            "PM_KAFKA_SASL_USERNAME": self.username,
            "PM_KAFKA_SASL_PASSWORD_FILE": str(password_file or self.password_file),
        }


@contextmanager
def secured_local_kafka(directory: Path) -> Iterator[SecuredKafka]:
    """A broker of its own (Apache Kafka on this JDK, whatever the session's Kafka) with TLS and a
    SCRAM user; its certificate is for 127.0.0.1 and signed by a CA made for it."""
    if not java_available():
        pytest.skip("java (and mvn, until the jars are cached) needed for a broker with TLS and SCRAM")
    ca = Authority("payout-manager test Kafka CA")
    issued = ca.server()
    ca_file = directory / "kafka-ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    password = f"scram-{uuid.uuid4().hex}"
    password_file = directory / "kafka-password"
    password_file.write_text(password + "\n")
    broker = LocalKafka.start(
        directory / "kafka",
        tls=BrokerCertificate(issued.cert_pem, issued.key_pem),
        scram_users={"payout-manager": password},
    )
    try:
        yield SecuredKafka(broker, ca_file, "payout-manager", password, password_file, issued.key_pem)
    finally:
        broker.stop()


@contextmanager
def _docker_kafka() -> Iterator[TestKafka]:
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(DOCKER_IMAGE).with_kraft()
    # As the local broker: topics made on first use, with 12 partitions; one replica of everything.
    for name, value in {
        "KAFKA_NUM_PARTITIONS": "12",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    }.items():
        container.with_env(name, value)
    with container:
        servers = container.get_bootstrap_server()

        def unpause() -> None:
            container.get_wrapped_container().unpause()
            wait_until_answering(servers)

        yield TestKafka(
            KafkaSource.DOCKER, servers, lambda: container.get_wrapped_container().pause(), unpause
        )


def wait_until_answering(bootstrap_servers: str, timeout: float = ANSWER_TIMEOUT) -> None:
    """Waits until the broker at `bootstrap_servers` answers a metadata request."""
    deadline = time.monotonic() + timeout
    while not broker_answers(bootstrap_servers, timeout=5.0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka at {bootstrap_servers} did not answer within {timeout:.0f} s")
        time.sleep(0.2)
