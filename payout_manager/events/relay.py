"""The relay: publishes the outbox to Kafka, in order per payout, and clears what the broker took.

Every `serve` process runs one relay; they share the database and exactly one of them leads at a
time (`storage.leadership`: a session-level advisory lock on its own connection; a standby takes
over when the leading process dies). The leader loops: read up to `BATCH_SIZE` outbox rows in id
order, produce them (key = payout id, so a payout's events share a partition), wait for every
delivery report, then delete the rows the broker acknowledged. A row leaves the outbox only after its delivery
report says so; a crash between the two publishes it again (at least once, as SPEC 3 says).
A row that `payout-manager events republish` queued again after the relay read it (its
`requeued` count moved on) is not deleted: it goes out once more, behind the republished events
before it (`payout_manager.events.republish`).

Order: the producer is idempotent with no message timeout, so librdkafka retries a message until
the broker has it, in order, however long the broker is away; nothing is given up and re-sent
behind a later event of the same payout. Should a message fail anyway (refused as too large, a
fatal producer error), only each payout's acknowledged prefix is cleared; that payout is held back
with a backoff of its own (`Holds`) while the others flow, and its rest is produced again, in
order, by a fresh producer.

Durability: the topic the relay creates on three brokers or more keeps three replicas with
`min.insync.replicas=2` (`topic_replication`), and with `acks=all` a delivery report says OK only
once two brokers hold the event: a row leaves the outbox only when losing any one broker cannot
lose it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from sqlalchemy import Connection

from payout_manager.events.kafka_config import KafkaConnection, client_config
from payout_manager.storage.database import DatabaseUrl
from payout_manager.storage.leadership import Leadership, lock_key
from payout_manager.storage.outbox import Outbox, PendingEvent

log = logging.getLogger(__name__)

# The advisory lock key of the relay's leadership; advisory locks are per database, so each
# database has its own leader.
LEADER_LOCK_KEY = lock_key("pm-relay")
BATCH_SIZE = 500
# How often an idle leader looks for new rows.
POLL_INTERVAL = 0.02
# A payout's back-off after the broker refused one of its events: doubles up to the maximum.
BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
# How often a leader waiting on an absent broker says so, and how often one Kafka error is logged.
WAITING_LOG_INTERVAL = 10.0
ERROR_LOG_INTERVAL = 60.0
TOPIC_PARTITIONS = 12
# Three copies of each event, and a write acknowledged (acks=all) only once two hold it: any one
# broker may die and no acknowledged event is lost, and the topic still takes writes meanwhile.
TOPIC_REPLICAS = 3
TOPIC_MIN_INSYNC_REPLICAS = 2

HEADERS_CONTENT_TYPE = ("content-type", b"application/x-protobuf")
HEADERS_MESSAGE_TYPE = ("message-type", b"payout_manager.v1.Event")


def producer_config(kafka: KafkaConnection) -> dict[str, Any]:
    return {
        **client_config(kafka),
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
        # A broker that hangs without closing its connections (a stopped process, a lost host)
        # holds every request in flight to it until this times out; only then do they go to the
        # partition's new leader. Measured on a three-broker cluster with one broker stopped
        # (SIGSTOP): every batch waited for as long as it hung at librdkafka's 60 s, about 11 s
        # at 10 s. A broker killed outright closes its connections and is noticed at once.
        "socket.timeout.ms": 10_000,
    }


def topic_replication(brokers: int) -> tuple[int, dict[str, str]]:
    """The replication factor and the topic configs of a new topic on a cluster of `brokers`:
    TOPIC_REPLICAS with TOPIC_MIN_INSYNC_REPLICAS where there are that many brokers, else one
    replica per broker and the broker's own min.insync.replicas."""
    if brokers >= TOPIC_REPLICAS:
        return TOPIC_REPLICAS, {"min.insync.replicas": str(TOPIC_MIN_INSYNC_REPLICAS)}
    return max(brokers, 1), {}


def headers(event: PendingEvent) -> list[tuple[str, str | bytes | None]]:
    return [("event_id", event.event_id.encode()), HEADERS_CONTENT_TYPE, HEADERS_MESSAGE_TYPE]


def acknowledged(batch: Sequence[PendingEvent], delivered: set[int]) -> list[PendingEvent]:
    """The events that may leave the outbox: per payout, the delivered ones before its first gap.

    An event delivered after one of its payout's that was not stays, so that both go out again in
    order; consumers drop the repeat by its sequence id.
    """
    blocked: set[str] = set()
    cleared: list[PendingEvent] = []
    for event in batch:
        if event.payout_id in blocked:
            continue
        if event.row_id in delivered:
            cleared.append(event)
        else:
            blocked.add(event.payout_id)
    return cleared


@dataclass
class _Deliveries:
    """Delivery reports of one batch."""

    expected: int
    delivered: set[int] = field(default_factory=set)
    failed: int = 0
    first_error: KafkaError | Exception | None = None

    def report(self, row_id: int, error: KafkaError | Exception | None) -> None:
        if error is None:
            self.delivered.add(row_id)
        else:
            self.failed += 1
            self.first_error = self.first_error or error

    @property
    def complete(self) -> bool:
        return len(self.delivered) == self.expected


class Holds:
    """Payouts held back after the broker refused one of their events, each with its own backoff.

    A payout's refused event (too large for the broker, say) must not hold up every other payout's
    events, and must not be overtaken by its own later ones: the payout waits, the rest flows.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, tuple[float, float]] = {}

    def ready(self, payout_id: str) -> bool:
        held = self._held.get(payout_id)
        return held is None or self._clock() >= held[0]

    def refused(self, payout_id: str) -> float:
        """Holds the payout back (again); returns for how many seconds."""
        previous = self._held.get(payout_id)
        backoff = BACKOFF_MIN if previous is None else min(previous[1] * 2, BACKOFF_MAX)
        self._held[payout_id] = (self._clock() + backoff, backoff)
        return backoff

    def published(self, payout_id: str) -> None:
        self._held.pop(payout_id, None)

    def __len__(self) -> int:
        return len(self._held)


class Relay:
    """The outbox relay of one process; `run` loops until `stop` is set."""

    def __init__(
        self,
        database_url: DatabaseUrl,
        kafka: KafkaConnection,
        topic: str,
        *,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL,
        drain_timeout: float = 5.0,
        on_failed: Callable[[int], None] | None = None,
    ) -> None:
        """`on_failed` is told how many events of a batch the broker refused or failed to take."""
        self._on_failed = on_failed
        self._leadership = Leadership(database_url, key=LEADER_LOCK_KEY, job="relay")
        self._kafka = kafka
        self._topic = topic
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._drain_timeout = drain_timeout
        self._fatal: KafkaError | None = None
        self._errors_said: dict[int, float] = {}
        # Rows the broker acknowledged whose clearing the database did not confirm (its connection
        # was lost): cleared first thing on the next connection, so that they are not sent twice.
        self._acknowledged: list[PendingEvent] = []

    def run(self, stop: threading.Event) -> None:
        self._leadership.run(stop, self._lead)

    def _lead(self, connection: Connection, stop: threading.Event) -> None:
        log.info("relay: publishing to %s", self._topic)
        self._ensure_topic()
        outbox = Outbox(connection)
        self._clear(outbox, self._acknowledged)
        producer = self._producer()
        holds = Holds()
        try:
            while not stop.is_set():
                batch = [e for e in outbox.pending(self._batch_size) if holds.ready(e.payout_id)]
                if not batch:
                    producer.poll(0)
                    stop.wait(self._poll_interval)
                    continue
                deliveries = self._publish(producer, batch, stop)
                cleared = acknowledged(batch, deliveries.delivered)
                self._clear(outbox, cleared)
                if stop.is_set():
                    break
                cleared_ids = {e.row_id for e in cleared}
                left = {e.payout_id for e in batch if e.row_id not in cleared_ids}
                for payout_id in {e.payout_id for e in batch if e.payout_id not in left}:
                    holds.published(payout_id)
                if deliveries.complete:
                    continue
                waits = [holds.refused(payout_id) for payout_id in left]
                log.warning(
                    "relay: %d of %d events not delivered (%s); %d payouts wait, the next for %.1f s",
                    deliveries.expected - len(deliveries.delivered),
                    len(batch),
                    deliveries.first_error or self._fatal,
                    len(holds),
                    min(waits),
                )
                # A fresh producer: nothing the old one still holds may reach the broker behind
                # (and so after) an event produced again.
                producer.purge()
                producer.flush(0)
                producer = self._producer()
        finally:
            # Stopping: what is still unacknowledged stays in the outbox for the next leader.
            producer.purge()
            producer.flush(0)

    def _clear(self, outbox: Outbox, events: list[PendingEvent]) -> None:
        """Clears acknowledged rows; remembered until the database confirms, across a lost connection."""
        self._acknowledged = events
        outbox.mark_published(events)
        self._acknowledged = []

    def _publish(
        self, producer: Producer, batch: Sequence[PendingEvent], stop: threading.Event
    ) -> _Deliveries:
        deliveries = _Deliveries(len(batch))
        refused: set[str] = set()
        for event in batch:
            if event.payout_id in refused:
                # Behind a refused event of its payout: not produced, so not out of order.
                deliveries.report(event.row_id, RuntimeError("an earlier event of the payout was refused"))
                continue

            def report(error: KafkaError | None, message: Message, row_id: int = event.row_id) -> None:
                deliveries.report(row_id, error)

            try:
                producer.produce(
                    self._topic,
                    key=event.payout_id.encode(),
                    value=event.payload,
                    headers=headers(event),
                    on_delivery=report,
                )
            except (KafkaException, BufferError) as error:
                # Refused before sending (too large, queue full): as a failed delivery.
                deliveries.report(event.row_id, error)
                refused.add(event.payout_id)
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
            # Let the rest of the batch report, so that what did land is not produced again.
            producer.flush(self._drain_timeout)
            if self._on_failed is not None:
                self._on_failed(deliveries.failed)
        return deliveries

    def _producer(self) -> Producer:
        self._fatal = None
        # librdkafka's own log is left to what matters; its errors reach _on_error, rate-limited there.
        config = {**producer_config(self._kafka), "error_cb": self._on_error, "log_level": 2}
        return Producer({**config, "logger": log})

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("relay: fatal producer error %s; starting a new producer", error)
            self._fatal = error
            return
        # A broker away repeats its error on every reconnect: each kind is said once a minute.
        now = time.monotonic()
        if now - self._errors_said.get(error.code(), -ERROR_LOG_INTERVAL) >= ERROR_LOG_INTERVAL:
            self._errors_said[error.code()] = now
            log.warning("relay: Kafka: %s", error.str())

    def _ensure_topic(self) -> None:
        """Creates the topic when the brokers have none of that name, replicated as
        `topic_replication` says for the brokers that answer; a broker away is no error here."""
        admin = AdminClient(client_config(self._kafka), logger=log)
        try:
            metadata = admin.list_topics(timeout=5)
            if self._topic in metadata.topics:
                return
            replicas, config = topic_replication(len(metadata.brokers))
            topic = NewTopic(
                self._topic, num_partitions=TOPIC_PARTITIONS, replication_factor=replicas, config=config
            )
            admin.create_topics([topic])[self._topic].result(10)
            log.info(
                "relay: created topic %s with %d partitions, replication factor %d, min.insync.replicas %s",
                self._topic,
                TOPIC_PARTITIONS,
                replicas,
                config.get("min.insync.replicas", "of the brokers"),
            )
        except KafkaException as error:
            code = error.args[0].code() if error.args and isinstance(error.args[0], KafkaError) else None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                log.warning("relay: could not make sure topic %s exists: %s", self._topic, error)
