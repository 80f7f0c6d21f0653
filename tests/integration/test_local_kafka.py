"""The local Kafka launcher, a broker and a three-broker cluster, and the tests' Kafka
(payout_manager_testing.kafka), on real brokers."""

from __future__ import annotations

import fcntl
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from support.topics import topic_configs

from local_stack.kafka import (
    KAFKA_VERSION,
    LOCK_FILE,
    POM,
    BrokerCertificate,
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaError,
    ensure_jars,
    java_available,
    new_cluster_id,
)
from payout_manager_testing.kafka import KafkaSource, SecuredKafka, TestKafka, secured_local_kafka

needs_java = pytest.mark.skipif(
    not java_available(), reason="java (and mvn, until the jars are cached) needed"
)

Record = tuple[bytes, bytes]


def create_topic(bootstrap_servers: str, partitions: int) -> str:
    topic = f"pm-test-{uuid.uuid4().hex}"
    # The client must outlive the future: a destroyed client fails what it has in flight.
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=partitions)], operation_timeout=30)[topic].result(30)
    return topic


def produce(
    producer: Producer, topic: str, records: Sequence[Record], timeout: float = 30.0
) -> list[KafkaError]:
    """Produces `records` and waits for every delivery report; returns the errors among them."""
    errors: list[KafkaError] = []
    delivered = 0

    def report(error: KafkaError | None, _message: Message) -> None:
        nonlocal delivered
        delivered += 1
        if error is not None:
            errors.append(error)

    for key, value in records:
        producer.produce(topic, value, key, on_delivery=report)
    assert producer.flush(timeout) == 0, f"{topic}: not every record was reported within {timeout} s"
    assert delivered == len(records)
    return errors


@contextmanager
def idempotent_producer(bootstrap_servers: str, **config: str | int) -> Iterator[Producer]:
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all", **config}
    )
    try:
        yield producer
    finally:
        producer.close()


@pytest.fixture
def producer(kafka: TestKafka) -> Iterator[Producer]:
    with idempotent_producer(kafka.bootstrap_servers) as producer:
        yield producer


def consume(
    bootstrap_servers: str, topic: str, group: str, count: int, timeout: float = 30.0
) -> list[Record]:
    """Reads `count` records as a member of consumer group `group` and commits them."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        received: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(received) < count:
            assert time.monotonic() < deadline, f"{topic}: {len(received)} of {count} records in {timeout} s"
            message = consumer.poll(0.2)
            if message is None:
                continue
            assert message.error() is None, message.error()
            key, value = message.key(), message.value()
            assert key is not None
            assert value is not None
            received.append((key, value))
        if received:
            consumer.commit(asynchronous=False)
        return received
    finally:
        consumer.close()


def test_pom_pins_kafka_version() -> None:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    versions = {
        dependency.findtext("m:artifactId", namespaces=namespace): dependency.findtext(
            "m:version", namespaces=namespace
        )
        for dependency in ET.parse(POM).getroot().iterfind("m:dependencies/m:dependency", namespace)
    }

    assert versions["kafka_2.13"] == KAFKA_VERSION


@needs_java
def test_jars_are_resolved_once_into_the_cache() -> None:
    jars = ensure_jars()

    assert ensure_jars() == jars
    assert jars.name == f"kafka-{KAFKA_VERSION}"
    names = {jar.name for jar in jars.glob("*.jar")}
    assert {f"kafka_2.13-{KAFKA_VERSION}.jar", f"kafka-clients-{KAFKA_VERSION}.jar"} <= names
    assert any(name.startswith("slf4j-simple-") for name in names)


def test_an_idempotent_producer_and_a_consumer_group_round_trip(kafka: TestKafka, producer: Producer) -> None:
    topic = create_topic(kafka.bootstrap_servers, partitions=3)
    records = [(f"payout-{n % 4}".encode(), f"event-{n}".encode()) for n in range(20)]
    group = f"pm-test-{uuid.uuid4().hex}"

    assert produce(producer, topic, records) == []
    received = consume(kafka.bootstrap_servers, topic, group, len(records))

    assert sorted(received) == sorted(records)
    for key in {key for key, _ in records}:
        # One key, one partition: its records arrive in the order they were produced.
        assert [record for record in received if record[0] == key] == [r for r in records if r[0] == key]

    # The group committed its offsets: the next member reads on from there.
    assert produce(producer, topic, [(b"payout-0", b"event-20")]) == []
    assert consume(kafka.bootstrap_servers, topic, group, 1) == [(b"payout-0", b"event-20")]


def test_topics_are_created_on_first_use_with_twelve_partitions(kafka: TestKafka, producer: Producer) -> None:
    if kafka.source is KafkaSource.ENVIRONMENT:
        pytest.skip(f"the broker's settings are its owner's: {kafka.source.value}")
    topic = f"pm-test-{uuid.uuid4().hex}"

    assert produce(producer, topic, [(b"key", b"value")]) == []

    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 12


def test_an_outage_takes_the_broker_away_and_brings_it_back_with_its_data(
    kafka: TestKafka, producer: Producer
) -> None:
    topic = create_topic(kafka.bootstrap_servers, partitions=1)
    assert produce(producer, topic, [(b"payout-1", b"before")]) == []

    with kafka.outage():
        with idempotent_producer(kafka.bootstrap_servers, **{"message.timeout.ms": 1500}) as impatient:
            errors = produce(impatient, topic, [(b"payout-1", b"during")], timeout=15)
        assert [error.code() for error in errors] == [KafkaError._MSG_TIMED_OUT]

    # Back at the same address: the producer from before the outage reconnects by itself.
    assert produce(producer, topic, [(b"payout-1", b"after")]) == []
    assert consume(kafka.bootstrap_servers, topic, f"pm-test-{uuid.uuid4().hex}", 2) == [
        (b"payout-1", b"before"),
        (b"payout-1", b"after"),
    ]


@needs_java
def test_a_killed_broker_starts_again_with_its_data(tmp_path: Path) -> None:
    broker = LocalKafka.start(tmp_path / "kafka")
    try:
        assert broker.running
        with idempotent_producer(broker.bootstrap_servers) as producer:
            assert produce(producer, "payouts", [(b"payout-1", b"kept")]) == []
        broker.kill()
        assert not broker.running

        # As the demo (`python -m local_stack`) does on every run: free ports, most likely other ones.
        broker = LocalKafka.start(tmp_path / "kafka")

        assert consume(broker.bootstrap_servers, "payouts", "pm-test", 1) == [(b"payout-1", b"kept")]
    finally:
        broker.stop()
    assert not broker.running


@needs_java
def test_a_broker_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(LocalKafkaError, match=r"exited with 1\nerrors in .*kafka\.log:\n") as raised:
            LocalKafka.start(tmp_path / "kafka", port=port)

    assert f"failed to bind to 127.0.0.1:{port}: Address already in use" in str(raised.value)


def test_cluster_ids_never_start_with_a_dash_which_the_storage_tool_would_take_for_an_option() -> None:
    ids = [new_cluster_id() for _ in range(5_000)]

    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert {len(cluster_id) for cluster_id in ids} == {22}
    assert len(set(ids)) == len(ids)


def sasl_ssl(kafka: SecuredKafka, mechanism: str, password: str) -> dict[str, str]:
    return {
        "bootstrap.servers": kafka.broker.sasl_ssl_bootstrap_servers,
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(kafka.ca_file),
        "sasl.mechanism": mechanism,
        "sasl.username": kafka.username,
        "sasl.password": password,
    }


def delivered(config: dict[str, str], topic: str) -> bool:
    """Whether one record produced with `config` is acknowledged within a few seconds."""
    with idempotent_producer(
        str(config["bootstrap.servers"]), **config, **{"message.timeout.ms": 8000}
    ) as producer:
        return produce(producer, topic, [(b"k", b"v")], timeout=15) == []


@needs_java
def test_a_broker_with_tls_and_scram_users_serves_ssl_and_both_scram_mechanisms_across_a_restart(
    tmp_path: Path,
) -> None:
    with secured_local_kafka(tmp_path) as kafka:
        ssl = {
            "bootstrap.servers": kafka.broker.ssl_bootstrap_servers,
            "security.protocol": "ssl",
            "ssl.ca.location": str(kafka.ca_file),
        }
        assert delivered(ssl, "secured")
        # The certificate is checked: the system's trust store knows no such CA.
        assert not delivered({k: v for k, v in ssl.items() if k != "ssl.ca.location"}, "secured")
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            assert delivered(sasl_ssl(kafka, mechanism, kafka.password), "secured")
        assert not delivered(sasl_ssl(kafka, "SCRAM-SHA-512", "not-the-password"), "secured")

        kafka.broker.restart()

        assert delivered(sasl_ssl(kafka, "SCRAM-SHA-512", kafka.password), "secured")
        assert consume(kafka.broker.bootstrap_servers, "secured", "pm-test", 4) == [(b"k", b"v")] * 4


def test_scram_users_need_a_broker_certificate_and_plain_names(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="need the SASL_SSL listener"):
        LocalKafka.start(tmp_path / "kafka", scram_users={"alice": "secret"})
    tls = BrokerCertificate(b"chain", b"key")
    with pytest.raises(LocalKafkaError, match="may hold only"):
        LocalKafka.start(tmp_path / "kafka", tls=tls, scram_users={"alice": "a,password=b"})


def test_a_broker_without_tls_has_no_secured_listener_to_name(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path, 9092, 9093)

    with pytest.raises(LocalKafkaError, match="no SSL listener"):
        _ = broker.ssl_bootstrap_servers
    with pytest.raises(LocalKafkaError, match="no SASL_SSL listener"):
        _ = broker.sasl_ssl_bootstrap_servers


# --- a cluster of three brokers -----------------------------------------------------------------


@needs_java
def test_a_cluster_that_does_not_answer_in_time_is_reported_with_each_brokers_log_and_stopped(
    tmp_path: Path,
) -> None:
    with pytest.raises(LocalKafkaError, match="did not answer at") as raised:
        LocalKafkaCluster.start(tmp_path / "cluster", timeout=0)

    for node_id in (1, 2, 3):
        broker_dir = tmp_path / "cluster" / f"broker-{node_id}"
        assert f"last 20 lines of {broker_dir / 'kafka.log'}" in str(raised.value)
        # No broker outlived the failed start: each would hold its data dir's lock.
        with (broker_dir / LOCK_FILE).open("wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_three_brokers_form_one_cluster_whose_topics_keep_three_replicas_two_in_sync(
    kafka_cluster: LocalKafkaCluster,
) -> None:
    servers = kafka_cluster.bootstrap_servers.split(",")
    views = [AdminClient({"bootstrap.servers": server}).list_topics(timeout=10) for server in servers]
    topic = create_topic(kafka_cluster.bootstrap_servers, partitions=6)
    # A consumer group: the offsets topic is made on its first use.
    with idempotent_producer(kafka_cluster.bootstrap_servers) as producer:
        assert produce(producer, topic, [(b"k", b"v")]) == []
    consume(kafka_cluster.bootstrap_servers, topic, f"pm-test-{uuid.uuid4().hex}", 1)
    kafka_cluster.wait_until_replicated()

    assert len({view.cluster_id for view in views}) == 1
    for view in views:
        assert sorted(f"{b.host}:{b.port}" for b in view.brokers.values()) == sorted(servers)
        assert sorted(view.brokers) == [1, 2, 3]
    topics = (
        AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}).list_topics(timeout=10).topics
    )
    for name in (topic, "__consumer_offsets"):
        assert {len(partition.replicas) for partition in topics[name].partitions.values()} == {3}
    # A partition's leaders are spread: each broker leads some.
    assert {partition.leader for partition in topics[topic].partitions.values()} == {1, 2, 3}
    assert topic_configs(kafka_cluster.bootstrap_servers, topic)["min.insync.replicas"] == "2"


def test_what_was_acknowledged_before_the_controller_was_killed_survives_and_two_brokers_take_writes(
    kafka_cluster: LocalKafkaCluster,
) -> None:
    topic = create_topic(kafka_cluster.bootstrap_servers, partitions=6)
    before = [(f"payout-{n % 10}".encode(), f"before-{n}".encode()) for n in range(100)]
    during = [(f"payout-{n % 10}".encode(), f"during-{n}".encode()) for n in range(100)]
    controller = kafka_cluster.active_controller()

    with idempotent_producer(kafka_cluster.bootstrap_servers) as producer:
        assert produce(producer, topic, before) == []
        kafka_cluster.kill(kafka_cluster.index_of(controller))
        assert produce(producer, topic, during) == []
    assert kafka_cluster.active_controller() != controller
    # Back, it catches up; then another broker goes, and the one that was killed serves its copies.
    kafka_cluster.restart(kafka_cluster.index_of(controller))
    kafka_cluster.wait_until_replicated()
    other = next(broker for broker in kafka_cluster.brokers if broker.node_id != controller)
    other.kill()
    received = consume(kafka_cluster.bootstrap_servers, topic, f"pm-test-{uuid.uuid4().hex}", 200)

    assert sorted(received) == sorted(before + during)
    for key in {key for key, _ in before}:
        assert [r for r in received if r[0] == key] == [r for r in before + during if r[0] == key]
