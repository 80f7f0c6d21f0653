"""A republish's work in the outbox, on real PostgreSQL: what it queues, in what order, what it locks,
and a row the relay read before a republish queued it again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from local_stack.postgres import create_database
from payout_manager.events.republish import republish_payouts, republish_since
from payout_manager.payouts import model
from payout_manager.storage import migrations, outbox
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.outbox import Outbox
from payout_manager.storage.payouts import Payouts

START = datetime(2026, 12, 1, 10, tzinfo=UTC)
STATUSES = (model.PayoutStatus.PAID, model.PayoutStatus.CONFIRMED, model.PayoutStatus.CANCELLED)


@pytest.fixture
def database_engine(postgres_server_url: str) -> Iterator[Engine]:
    url = create_database(postgres_server_url, f"pm_republish_{uuid.uuid4().hex[:12]}")
    migrations.upgrade(url)
    engine = create_database_engine(url, pool_size=3)
    yield engine
    engine.dispose()


def store(engine: Engine, payout_id: str, times: list[datetime]) -> None:
    """A payout with one event at each of `times` (created, then paid, confirmed, cancelled)."""
    request = model.PayoutRequest(payout_id, "party-1", "shop-1", 1_000, "RUB", "", {})
    payout, event = model.create(
        request, payout_tool_id="tool-1", amount=1_000, fee=0, cash_flow=(), now=times[0], initiator="t"
    )
    events = [event]
    for status, at in zip(STATUSES, times[1:], strict=False):
        moved = model.transition(payout, status, now=at, initiator="t")
        assert moved.event is not None
        payout = moved.payout
        events.append(moved.event)
    with engine.begin() as connection:
        Payouts(connection).add(payout)
        for stored in events:
            Payouts(connection).add_event(replace(stored, event_id=str(uuid.uuid4())))


def queued(connection: Connection) -> list[tuple[str, int, int]]:
    """The outbox as the relay reads it: (payout, sequence id, requeued) in its order."""
    rows = connection.execute(
        text(
            "SELECT e.payout_id, e.sequence_id, o.requeued FROM payout_event_outbox o"
            " JOIN payout_event e ON e.id = o.event_row_id ORDER BY o.event_row_id"
        )
    )
    return [(row.payout_id, row.sequence_id, row.requeued) for row in rows]


def empty_the_outbox(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM payout_event_outbox"))


def test_republished_events_go_before_a_later_event_of_their_payout_still_waiting(
    database_engine: Engine,
) -> None:
    store(database_engine, "a", [START, START, START])
    store(database_engine, "b", [START, START])
    # Events 1 and 2 of `a` and all of `b` were published; `a`'s event 3 still waits.
    with database_engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM payout_event_outbox o USING payout_event e"
                " WHERE e.id = o.event_row_id AND NOT (e.payout_id = 'a' AND e.sequence_id = 3)"
            )
        )

    done = republish_payouts(Database(database_engine), ["a", "b", "a"])

    assert done.summary() == "queued 5 events of 2 payouts to be published again"
    with database_engine.connect() as connection:
        in_order = queued(connection)
    # Id order is sequence order per payout; the waiting event is counted, not queued twice.
    assert [(p, s) for p, s, _ in in_order if p == "a"] == [("a", 1), ("a", 2), ("a", 3)]
    assert [(p, s) for p, s, _ in in_order if p == "b"] == [("b", 1), ("b", 2)]
    assert ("a", 3, 1) in in_order


def test_a_row_the_relay_read_before_a_republish_queued_it_again_stays_to_go_out_once_more(
    database_engine: Engine,
) -> None:
    store(database_engine, "a", [START, START])
    with database_engine.begin() as connection:
        read_by_the_relay = Outbox(connection).pending(10)

    republish_payouts(Database(database_engine), ["a"])
    with database_engine.begin() as connection:
        # The broker took what the relay read: only the rows not queued since leave.
        Outbox(connection).mark_published(read_by_the_relay)
        left = queued(connection)
        Outbox(connection).mark_published(Outbox(connection).pending(10))
        after_the_next_batch = queued(connection)

    assert left == [("a", 1, 1), ("a", 2, 1)]
    assert after_the_next_batch == []


def test_a_republish_holds_its_payouts_as_a_change_does_until_it_commits(database_engine: Engine) -> None:
    store(database_engine, "a", [START])
    store(database_engine, "b", [START])
    with database_engine.connect() as republishing, database_engine.connect() as changing:
        transaction = republishing.begin()
        outbox.requeue(republishing, {"a": 1})
        with pytest.raises(OperationalError, match="could not obtain lock"):
            changing.execute(text("SELECT 1 FROM payout WHERE payout_id = 'a' FOR NO KEY UPDATE NOWAIT"))
        changing.rollback()
        # Other payouts are not held.
        changing.execute(text("SELECT 1 FROM payout WHERE payout_id = 'b' FOR NO KEY UPDATE NOWAIT"))
        changing.rollback()
        transaction.commit()
        changing.execute(text("SELECT 1 FROM payout WHERE payout_id = 'a' FOR NO KEY UPDATE NOWAIT"))


def test_a_change_waiting_for_the_republish_is_queued_behind_every_republished_event(
    database_engine: Engine,
) -> None:
    store(database_engine, "a", [START, START])
    empty_the_outbox(database_engine)
    with database_engine.connect() as republishing:
        transaction = republishing.begin()
        outbox.requeue(republishing, {"a": 1})

        def change() -> None:
            # As pm_change_payout does: lock the payout at its revision, then store the event.
            with database_engine.begin() as connection:
                connection.execute(text("SELECT 1 FROM payout WHERE payout_id = 'a' FOR NO KEY UPDATE"))
                confirmed = model.transition(
                    stored_payout(connection), model.PayoutStatus.CONFIRMED, now=START, initiator="t"
                ).event
                assert confirmed is not None and confirmed.sequence_id == 3
                Payouts(connection).add_event(replace(confirmed, event_id=str(uuid.uuid4())))

        changing = threading.Thread(target=change)
        changing.start()
        changing.join(0.5)
        assert changing.is_alive(), "the change did not wait for the republish"
        transaction.commit()
        changing.join(10)

    with database_engine.connect() as connection:
        assert queued(connection) == [("a", 1, 0), ("a", 2, 0), ("a", 3, 0)]


def stored_payout(connection: Connection) -> model.Payout:
    found = Payouts(connection).get("a")
    assert found is not None
    return found


def test_since_queues_each_payouts_events_from_its_first_at_or_after_that_time_a_chunk_at_a_time(
    database_engine: Engine,
) -> None:
    hour = timedelta(hours=1)
    since = START + 2 * hour
    store(database_engine, "before", [START, START + hour])
    store(database_engine, "across", [START, START + hour, since, START + 3 * hour])
    store(database_engine, "after", [since + hour, since + 2 * hour])
    for n in range(5):
        store(database_engine, f"late-{n}", [START, since])
    empty_the_outbox(database_engine)

    done = republish_since(Database(database_engine), since, chunk=2)

    with database_engine.connect() as connection:
        in_order = queued(connection)
    assert done.summary() == "queued 9 events of 7 payouts to be published again"
    per_payout: dict[str, list[int]] = {}
    for payout_id, sequence_id, _ in in_order:
        per_payout.setdefault(payout_id, []).append(sequence_id)
    assert per_payout == {"across": [3, 4], "after": [1, 2], **{f"late-{n}": [2] for n in range(5)}}


def test_a_time_after_every_event_queues_nothing(database_engine: Engine) -> None:
    store(database_engine, "a", [START])
    empty_the_outbox(database_engine)

    done = republish_since(Database(database_engine), START + timedelta(microseconds=1))

    assert done.summary() == "queued 0 events of 0 payouts to be published again"
    with database_engine.connect() as connection:
        assert queued(connection) == []
