"""The relay against real PostgreSQL and Kafka, with commits ordered by hand."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine, select, text, update
from support.books import dsn
from support.events import sequences, wait_for_empty_outbox

from local_stack.postgres import LocalPostgres, create_database
from payout_manager.events.codec import event_to_proto
from payout_manager.events.kafka_config import KafkaConnection
from payout_manager.events.relay import Relay
from payout_manager.payouts import model
from payout_manager.storage import migrations
from payout_manager.storage.database import create_database_engine
from payout_manager.storage.outbox import Outbox, PendingEvent
from payout_manager.storage.payouts import Payouts
from payout_manager.storage.tables import payout_event
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.topic import TopicReader


@pytest.fixture
def database_engine(postgres_server_url: str) -> Iterator[Engine]:
    url = create_database(postgres_server_url, f"pm_relay_{uuid.uuid4().hex[:12]}")
    migrations.upgrade(url)
    engine = create_database_engine(url, pool_size=2)
    yield engine
    engine.dispose()


def new_payout(payout_id: str) -> tuple[model.Payout, model.PayoutEvent]:
    request = model.PayoutRequest(payout_id, "party-1", "shop-1", 1_000, "RUB", "", {})
    payout, event = model.create(
        request,
        payout_tool_id="tool-1",
        amount=1_000,
        fee=0,
        cash_flow=(),
        now=datetime.now(UTC),
        initiator="back-office",
    )
    return payout, replace(event, event_id=str(uuid.uuid4()))


@contextmanager
def relay_running(engine: Engine, bootstrap_servers: str, topic: str) -> Iterator[TopicReader]:
    """The relay on a thread, and a reader of its topic, for the `with` block."""
    relay = Relay(engine.url.render_as_string(hide_password=False), KafkaConnection(bootstrap_servers), topic)
    stop = threading.Event()
    running = threading.Thread(target=relay.run, args=(stop,))
    running.start()
    reader = TopicReader(bootstrap_servers, topic)
    try:
        yield reader
    finally:
        stop.set()
        running.join()
        reader.close()


def row_id(engine: Engine, payout_id: str) -> int:
    with engine.connect() as connection:
        found: int = connection.execute(
            select(payout_event.c.id).where(payout_event.c.payout_id == payout_id)
        ).scalar_one()
        return found


def test_an_event_committed_after_one_with_a_higher_id_is_still_published(
    database_engine: Engine, kafka: TestKafka
) -> None:
    early, late = f"early-{uuid.uuid4()}", f"late-{uuid.uuid4()}"
    topic = f"pm-relay-{uuid.uuid4().hex[:12]}"
    # `early` takes the lower id but stays uncommitted while `late` commits.
    slow = database_engine.connect()
    slow_transaction = slow.begin()
    payout, event = new_payout(early)
    Payouts(slow).add(payout)
    Payouts(slow).add_event(event)
    with database_engine.begin() as fast:
        payout, event = new_payout(late)
        Payouts(fast).add(payout)
        Payouts(fast).add_event(event)

    try:
        with relay_running(database_engine, kafka.bootstrap_servers, topic) as reader:
            reader.read_events_of({late: 1}, timeout=60)
            # The relay has published past the lower id; now that transaction commits.
            slow_transaction.commit()
            records = reader.read_events_of({early: 1, late: 1}, timeout=60)
    finally:
        slow.close()

    assert row_id(database_engine, early) < row_id(database_engine, late)
    assert [r.key for r in records] == [late, early]
    assert sequences(records) == {late: [1], early: [1]}


def test_a_rolled_back_event_is_never_published(database_engine: Engine, kafka: TestKafka) -> None:
    gone, kept = f"gone-{uuid.uuid4()}", f"kept-{uuid.uuid4()}"
    topic = f"pm-relay-{uuid.uuid4().hex[:12]}"
    with database_engine.connect() as connection:
        transaction = connection.begin()
        payout, event = new_payout(gone)
        Payouts(connection).add(payout)
        Payouts(connection).add_event(event)
        transaction.rollback()
    with database_engine.begin() as connection:
        payout, event = new_payout(kept)
        Payouts(connection).add(payout)
        Payouts(connection).add_event(event)

    with relay_running(database_engine, kafka.bootstrap_servers, topic) as reader:
        records = reader.read_events_of({kept: 1}, timeout=60)

    assert [r.key for r in records] == [kept]


def test_an_event_the_broker_refuses_holds_back_only_its_own_payout_and_goes_out_once_it_can(
    database_engine: Engine, kafka: TestKafka
) -> None:
    healthy, stuck = f"healthy-{uuid.uuid4()}", f"stuck-{uuid.uuid4()}"
    topic = f"pm-relay-{uuid.uuid4().hex[:12]}"
    # Metadata past the broker's 1 MB message limit: both of the payout's events carry it.
    oversized = model.PayoutRequest(stuck, "party-1", "shop-1", 1_000, "RUB", "", {"blob": "x" * 1_200_000})
    now = datetime.now(UTC)
    big, big_created = model.create(
        oversized,
        payout_tool_id="tool-1",
        amount=1_000,
        fee=0,
        cash_flow=(),
        now=now,
        initiator="back-office",
    )
    big_confirmed = model.transition(
        big, model.PayoutStatus.CONFIRMED, now=now, initiator="back-office"
    ).event
    assert big_confirmed is not None
    small, small_created = new_payout(healthy)
    with database_engine.begin() as connection:
        Payouts(connection).add(big)
        Payouts(connection).add_event(replace(big_created, event_id=str(uuid.uuid4())))
        Payouts(connection).add_event(replace(big_confirmed, event_id=str(uuid.uuid4())))
        Payouts(connection).add(small)
        Payouts(connection).add_event(small_created)

    with relay_running(database_engine, kafka.bootstrap_servers, topic) as reader:
        reader.read_events_of({healthy: 1}, timeout=60)
        # The producer refuses the oversized event: its payout waits, its later event included,
        # while the other payout's event went out.
        time.sleep(2)
        assert stuck not in sequences(reader.records)
        # An operator trims the events; the held payout goes out on its next try, in order.
        with database_engine.begin() as connection:
            for event in (big_created, big_confirmed):
                trimmed = replace(event, payout=replace(event.payout, metadata={}))
                connection.execute(
                    update(payout_event)
                    .where(payout_event.c.payout_id == stuck, payout_event.c.sequence_id == event.sequence_id)
                    .values(payload=event_to_proto(trimmed).SerializeToString())
                )
        records = reader.read_events_of({healthy: 1, stuck: 2}, timeout=60)

    assert sequences(records) == {healthy: [1], stuck: [1, 2]}


def test_the_relay_rides_out_a_database_restart(
    tmp_path: Path, kafka: TestKafka, caplog: pytest.LogCaptureFixture
) -> None:
    # A PostgreSQL of its own, which this test stops and starts again on the same port.
    postgres = LocalPostgres.start(tmp_path / "postgres", durable=False)
    try:
        url = postgres.create_database("relay")
        migrations.upgrade(url)
        engine = create_database_engine(url, pool_size=1)
        before, after = f"before-{uuid.uuid4()}", f"after-{uuid.uuid4()}"
        topic = f"pm-relay-{uuid.uuid4().hex[:12]}"
        store(engine, before)
        with relay_running(engine, kafka.bootstrap_servers, topic) as reader:
            reader.read_events_of({before: 1}, timeout=60)
            postgres.stop()
            time.sleep(2)
            postgres = LocalPostgres.start(tmp_path / "postgres", port=postgres.port, durable=False)
            engine.dispose()
            store(engine, after)
            records = reader.read_events_of({before: 1, after: 1}, timeout=60)
        engine.dispose()
    finally:
        postgres.stop()

    assert sequences(records) == {before: [1], after: [1]}
    assert "relay: database lost" in caplog.text


def store(engine: Engine, payout_id: str) -> None:
    payout, created = new_payout(payout_id)
    with engine.begin() as connection:
        Payouts(connection).add(payout)
        Payouts(connection).add_event(created)


def test_events_the_broker_took_go_out_once_though_the_connection_is_lost_before_they_are_cleared(
    database_engine: Engine,
    kafka: TestKafka,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost: list[int] = []
    clear = Outbox.mark_published

    def lose_the_connection_first(outbox: Outbox, row_ids: Collection[PendingEvent]) -> None:
        if row_ids and not lost:
            # The relay's session ends after the broker acknowledged, before the rows are cleared.
            pid = outbox._connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with closing(psycopg2.connect(dsn(database_engine.url.render_as_string(False)))) as admin:
                admin.cursor().execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            lost.append(pid)
        clear(outbox, row_ids)

    monkeypatch.setattr(Outbox, "mark_published", lose_the_connection_first)
    payout_id = f"lost-{uuid.uuid4()}"
    store(database_engine, payout_id)
    topic = f"pm-relay-{uuid.uuid4().hex[:12]}"
    with relay_running(database_engine, kafka.bootstrap_servers, topic) as reader:
        reader.read_events_of({payout_id: 1}, timeout=60)
        wait_for_empty_outbox(database_engine.url.render_as_string(False), timeout=30)
        # The outbox is empty only once the relay cleared the event: a repeat would be on the
        # topic by then.
        with pytest.raises(TimeoutError):
            reader.read_until(lambda records: len(records) > 1, timeout=3)

    assert lost
    assert "relay: database lost" in caplog.text
    assert sequences(reader.records) == {payout_id: [1]}
