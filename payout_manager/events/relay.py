"""The relay: publishes the outbox to Kafka, in order per payout, and clears what the broker took.

Every `serve` process runs one relay; they share the database and exactly one of them leads at a
time: the one holding a session-level advisory lock on its own connection. When that process
dies, PostgreSQL ends its session, the lock is free, and a standby takes over within
`STANDBY_INTERVAL`. The leader loops: read up to `BATCH_SIZE` outbox rows in id order, produce
them (key = payout id, so a payout's events share a partition), wait for every delivery report,
then delete the rows the broker acknowledged. A row leaves the outbox only after its delivery
report says so; a crash between the two publishes it again (at least once, as SPEC 3 says).

Order: the producer is idempotent with no message timeout, so librdkafka retries a message until
the broker has it, in order, however long the broker is away; nothing is given up and re-sent
behind a later event of the same payout. Should a message fail anyway (a fatal producer error),
only each payout's acknowledged prefix is cleared, and the rest is produced again, in order, by a
fresh producer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from payout_manager.storage.database import sqlalchemy_url
from payout_manager.storage.outbox import Outbox, PendingEvent

log = logging.getLogger(__name__)

# pg_try_advisory_lock key of the relay's leadership ("pm-relay" in ASCII); advisory locks are
# per database, so each database has its own leader.
LEADER_LOCK_KEY = 0x706D2D72656C6179
BATCH_SIZE = 500
# How often an idle leader looks for new rows, and a standby for a vacant leadership.
POLL_INTERVAL = 0.02
STANDBY_INTERVAL = 0.5
# Back-off after a failure (database lost, undelivered messages): doubles up to the maximum.
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
# How often a leader waiting on an absent broker says so.
WAITING_LOG_INTERVAL = 10.0
TOPIC_PARTITIONS = 12

HEADERS_CONTENT_TYPE = ("content-type", b"application/x-protobuf")
HEADERS_MESSAGE_TYPE = ("message-type", b"payout_manager.v1.Event")


def producer_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "payout-manager-relay",
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        # 0 = never time a message out: the producer retries it, in order, until the broker has it.
        "message.timeout.ms": 0,
        "linger.ms": 5,
        "compression.type": "lz4",
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2000,
    }


def headers(event: PendingEvent) -> list[tuple[str, str | bytes | None]]:
    return [("event_id", event.event_id.encode()), HEADERS_CONTENT_TYPE, HEADERS_MESSAGE_TYPE]


def acknowledged(batch: Sequence[PendingEvent], delivered: set[int]) -> list[int]:
    """Row ids that may leave the outbox: per payout, the delivered events before its first gap.

    An event delivered after one of its payout's that was not stays, so that both go out again in
    order; consumers drop the repeat by its sequence id.
    """
    blocked: set[str] = set()
    cleared: list[int] = []
    for event in batch:
        if event.payout_id in blocked:
            continue
        if event.row_id in delivered:
            cleared.append(event.row_id)
        else:
            blocked.add(event.payout_id)
    return cleared


@dataclass
class _Deliveries:
    """Delivery reports of one batch."""

    expected: int
    delivered: set[int] = field(default_factory=set)
    failed: int = 0
    first_error: KafkaError | None = None

    def report(self, row_id: int, error: KafkaError | None) -> None:
        if error is None:
            self.delivered.add(row_id)
        else:
            self.failed += 1
            self.first_error = self.first_error or error

    @property
    def complete(self) -> bool:
        return len(self.delivered) == self.expected


class Relay:
    """The outbox relay of one process; `run` loops until `stop` is set."""

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        topic: str,
        *,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        drain_timeout: float = 5.0,
    ) -> None:
        # No pool: closing the connection must end the session, and with it the leadership.
        self._engine: Engine = create_engine(
            sqlalchemy_url(database_url),
            poolclass=NullPool,
            # Each statement commits at once: the relay holds no transaction open while it waits.
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5, "application_name": "payout-manager-relay"},
        )
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._drain_timeout = drain_timeout
        self._fatal: KafkaError | None = None
        self.leading = threading.Event()

    def run(self, stop: threading.Event) -> None:
        backoff = BACKOFF_MIN
        while not stop.is_set():
            try:
                with self._engine.connect() as connection:
                    if not connection.scalar(
                        text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
                    ):
                        stop.wait(STANDBY_INTERVAL)
                        continue
                    log.info("relay: leading, publishing to %s", self._topic)
                    self.leading.set()
                    try:
                        self._lead(connection, stop)
                    finally:
                        self.leading.clear()
                backoff = BACKOFF_MIN
            except DBAPIError as error:
                log.warning(
                    "relay: database lost (%s); retrying in %.1f s", type(error.orig).__name__, backoff
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception:
                log.exception("relay: unexpected failure; retrying in %.1f s", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._engine.dispose()

    def _lead(self, connection: Connection, stop: threading.Event) -> None:
        self._ensure_topic()
        outbox = Outbox(connection)
        producer = self._producer()
        backoff = BACKOFF_MIN
        try:
            while not stop.is_set():
                batch = outbox.pending(self._batch_size)
                if not batch:
                    producer.poll(0)
                    stop.wait(self._poll_interval)
                    continue
                deliveries = self._publish(producer, batch, stop)
                outbox.mark_published(acknowledged(batch, deliveries.delivered))
                if not deliveries.complete and not stop.is_set():
                    if deliveries.first_error is not None:
                        log.warning(
                            "relay: %d of %d events not delivered (%s); retrying in %.1f s",
                            deliveries.failed,
                            len(batch),
                            deliveries.first_error,
                            backoff,
                        )
                    if self._fatal is not None:
                        producer = self._producer()
                    stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    backoff = BACKOFF_MIN
        finally:
            # Stopping: what is still unacknowledged stays in the outbox for the next leader.
            producer.purge()
            producer.flush(0)

    def _publish(
        self, producer: Producer, batch: Sequence[PendingEvent], stop: threading.Event
    ) -> _Deliveries:
        deliveries = _Deliveries(len(batch))
        for event in batch:

            def report(error: KafkaError | None, message: Message, row_id: int = event.row_id) -> None:
                deliveries.report(row_id, error)

            producer.produce(
                self._topic,
                key=event.payout_id.encode(),
                value=event.payload,
                headers=headers(event),
                on_delivery=report,
            )
        waiting_since = said = time.monotonic()
        drain_until: float | None = None
        while not deliveries.complete and deliveries.failed == 0 and self._fatal is None:
            if stop.is_set():
                # Stopping: the batch in flight may still land, which saves the next leader a repeat.
                drain_until = drain_until or time.monotonic() + self._drain_timeout
                if time.monotonic() >= drain_until:
                    break
            producer.poll(0.05)
            if time.monotonic() - said >= WAITING_LOG_INTERVAL:
                said = time.monotonic()
                log.warning(
                    "relay: the broker has not acknowledged %d events for %.0f s; still trying",
                    deliveries.expected - len(deliveries.delivered),
                    said - waiting_since,
                )
        if deliveries.failed:
            # A failure comes with its batch's later reports close behind: collect them briefly.
            producer.flush(1.0)
        return deliveries

    def _producer(self) -> Producer:
        self._fatal = None
        return Producer(
            {**producer_config(self._bootstrap_servers), "error_cb": self._on_error, "logger": log}
        )

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("relay: fatal producer error %s; starting a new producer", error)
            self._fatal = error
        else:
            log.debug("relay: producer error %s", error)

    def _ensure_topic(self) -> None:
        """Creates the topic when the broker has none of that name; a broker away is no error here."""
        admin = AdminClient({"bootstrap.servers": self._bootstrap_servers}, logger=log)
        try:
            if self._topic in admin.list_topics(timeout=5).topics:
                return
            admin.create_topics([NewTopic(self._topic, num_partitions=TOPIC_PARTITIONS)])[self._topic].result(
                10
            )
            log.info("relay: created topic %s with %d partitions", self._topic, TOPIC_PARTITIONS)
        except KafkaException as error:
            code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                log.warning("relay: could not make sure topic %s exists: %s", self._topic, error)
