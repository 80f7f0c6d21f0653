"""`payout-manager events republish`: a consumer that lost data rebuilds from stored events (SPEC 4).

Real `serve` processes publish to a real broker. A consumer's lost data is a topic holding none of
the events: the service is restarted on a fresh topic, so all a reader of it finds is republished.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from support.books import dsn
from support.events import (
    ServedWithStub,
    Stack,
    applied,
    records_on_topic,
    sequences,
    wait_for_empty_outbox,
)
from support.payouts import cancel, confirm, create, mark_paid

from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.topic import Record, TopicReader

TIMEOUT = 120
FUNDS = 10**12


@pytest.fixture
def stack(postgres_server_url: str, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def republish(database_url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """`payout-manager events republish ARGS` on this database (none: PM_DATABASE_URL unset)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PM_")}
    if database_url is not None:
        env["PM_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "payout_manager", "events", "republish", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def on_a_fresh_topic(stack: Stack, served: ServedWithStub, workers: int = 1) -> tuple[ServedWithStub, str]:
    """The consumer's data lost: `served` stops, and a new serve publishes to a topic of nothing."""
    served.close()
    topic = f"{stack.topic}-rebuilt"
    return stack.serve(workers=workers, env={"PM_KAFKA_TOPIC": topic}), topic


def everything_on(stack: Stack, topic: str) -> list[Record]:
    """Once the outbox is empty, every record of the topic, read by a fresh consumer group."""
    wait_for_empty_outbox(stack.database_url, TIMEOUT)
    total = records_on_topic(stack.bootstrap_servers, topic)
    reader = TopicReader(stack.bootstrap_servers, topic)
    try:
        return reader.read_until(lambda records: len(records) >= total, TIMEOUT)
    finally:
        reader.close()


def rebuilt_view(records: list[Record]) -> dict[str, list[pb.Event]]:
    """Per payout, the events a consumer that keeps the highest sequence id it applied applies."""
    view: dict[str, list[pb.Event]] = {}
    for record in records:
        events = view.setdefault(record.key, [])
        if not events or record.event.sequence_id > events[-1].sequence_id:
            events.append(record.event)
    return view


def stored(served: ServedWithStub, payout_id: str) -> list[pb.Event]:
    return list(served.payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)).events)


def outbox_rows(database_url: str) -> list[tuple[int, int]]:
    with psycopg2.connect(dsn(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT event_row_id, requeued FROM payout_event_outbox ORDER BY event_row_id")
        return [(int(row_id), int(requeued)) for row_id, requeued in cursor.fetchall()]


# --- rebuilding -------------------------------------------------------------------------------


def test_a_fresh_consumer_group_rebuilds_from_the_republished_events_what_get_payout_events_returns(
    stack: Stack,
) -> None:
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=FUNDS)
    stub = served.payouts
    reverted = create(stub, shop.party_id, shop.shop_id, 10_000, metadata={"order": "42"}).payout_id
    mark_paid(stub, reverted)
    confirm(stub, reverted)
    cancel(stub, reverted, "returned by the bank")
    cancelled = create(stub, shop.party_id, shop.shop_id, 20_000).payout_id
    cancel(stub, cancelled, "merchant asked")
    created = create(stub, shop.party_id, shop.shop_id, 30_000).payout_id
    left_alone = create(stub, shop.party_id, shop.shop_id, 40_000).payout_id
    stack.published({reverted: 4, cancelled: 2, created: 1, left_alone: 1})
    served, topic = on_a_fresh_topic(stack, served)

    run = republish(stack.database_url, "--payout-id", reverted, cancelled, "--payout-id", created)

    assert run.returncode == 0, run.stderr
    assert run.stdout == "queued 7 events of 3 payouts to be published again\n"
    view = rebuilt_view(everything_on(stack, topic))
    assert view == {p: stored(served, p) for p in (reverted, cancelled, created)}
    assert [e.sequence_id for e in view[reverted]] == [1, 2, 3, 4]


def test_republished_while_the_same_payouts_change_each_payouts_run_is_whole_and_in_order(
    stack: Stack,
) -> None:
    served = stack.serve(workers=2)
    shop = stack.world.add_shop(funds=FUNDS)
    stub = served.payouts
    payout_ids = [create(stub, shop.party_id, shop.shop_id, 1_000 + n).payout_id for n in range(240)]
    stack.published(dict.fromkeys(payout_ids, 1))
    changed_at: list[float] = []
    enough_before = threading.Event()

    def change(mine: list[str]) -> None:
        # Step by step over all of its payouts: every payout changes before and after the command.
        for step in (mark_paid, confirm, cancel):
            for payout_id in mine:
                step(stub, payout_id)
                changed_at.append(time.monotonic())
                if len(changed_at) >= 60:
                    enough_before.set()

    changers = [threading.Thread(target=change, args=(payout_ids[n::2],)) for n in range(2)]
    for changer in changers:
        changer.start()
    try:
        assert enough_before.wait(TIMEOUT)
        started = time.monotonic()
        run = republish(stack.database_url, "--payout-id", *payout_ids)
        ended = time.monotonic()
    finally:
        for changer in changers:
            changer.join(TIMEOUT)

    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith(f"events of {len(payout_ids)} payouts to be published again\n")
    assert any(t < started for t in changed_at) and any(t > ended for t in changed_at), "no overlap"
    received = sequences(everything_on(stack, stack.topic), payout_ids)
    broken = {}
    for payout_id in payout_ids:
        sent = received[payout_id]
        # The run starts at the republished copy of event 1; from there a consumer applies 1..4.
        starts = [i for i, sequence_id in enumerate(sent) if sequence_id == 1]
        assert len(starts) == 2, f"{payout_id}: {sent}"
        if applied(sent[starts[1] :]) != [1, 2, 3, 4]:
            broken[payout_id] = sent
    assert not broken, (
        f"{len(broken)} payouts out of order after the republish, e.g. {list(broken.items())[:3]}"
    )


def test_since_republishes_exactly_the_events_created_then_or_later(stack: Stack) -> None:
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=FUNDS)
    stub = served.payouts
    before = create(stub, shop.party_id, shop.shop_id, 1_000).payout_id
    mark_paid(stub, before)
    across = create(stub, shop.party_id, shop.shop_id, 2_000).payout_id
    mark_paid(stub, across)
    confirm(stub, across)
    after = create(stub, shop.party_id, shop.shop_id, 3_000).payout_id
    cancel(stub, after)
    stack.published({before: 2, across: 3, after: 2})
    # The time of `across`'s second event, to the microsecond, as the operator would read it.
    since = stored(served, across)[1].created_at.ToJsonString()
    served, topic = on_a_fresh_topic(stack, served)

    run = republish(stack.database_url, "--since", since)

    assert run.returncode == 0, run.stderr
    assert run.stdout == "queued 4 events of 2 payouts to be published again\n"
    records = everything_on(stack, topic)
    assert sequences(records) == {across: [2, 3], after: [1, 2]}
    assert rebuilt_view(records) == {across: stored(served, across)[1:], after: stored(served, after)}


# --- refusals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped(
    postgres_server_url: str, kafka: TestKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    """A stack with one payout whose events wait in the outbox, and no relay running to take them."""
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, tmp_path_factory.mktemp("republish"))
    served = stack.serve(workers=1, env={"PM_KAFKA_BOOTSTRAP_SERVERS": ""})
    shop = stack.world.add_shop(funds=FUNDS)
    payout_id = create(served.payouts, shop.party_id, shop.shop_id, 1_000).payout_id
    confirm(served.payouts, payout_id)
    served.close()
    yield stack, payout_id
    stack.close()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--payout-id", "{known}", "--payout-id", "no-such-payout"), "no-such-payout"),
        (("--payout-id", "no-such-payout", "{known}", "nor-this"), "no-such-payout, nor-this"),
        (("--since", "2026-12-01"), "RFC 3339"),
        (("--since", "2026-12-01T10:00:00"), "RFC 3339"),
        (("--since", "yesterday"), "RFC 3339"),
        (("--since", "2026-02-30T10:00:00Z"), "not a valid time"),
        ((), "one of the arguments --payout-id --since is required"),
        (("--payout-id", "{known}", "--since", "2026-12-01T10:00:00Z"), "not allowed with"),
        (("--payout-id",), "expected at least one argument"),
    ],
)
def test_a_bad_argument_is_one_line_exit_2_and_queues_nothing(
    stopped: tuple[Stack, str], args: tuple[str, ...], named: str
) -> None:
    stack, known = stopped
    waiting = outbox_rows(stack.database_url)

    run = republish(stack.database_url, *(arg.format(known=known) for arg in args))

    assert run.returncode == 2, run.stdout + run.stderr
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert named in run.stderr
    assert run.stdout == ""
    assert outbox_rows(stack.database_url) == waiting


def test_without_a_database_url_it_is_one_line_naming_the_setting() -> None:
    run = republish(None, "--since", "2026-12-01T10:00:00Z")

    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and "PM_DATABASE_URL" in run.stderr, run.stderr


def test_the_good_arguments_the_refusals_are_checked_against_do_queue(stopped: tuple[Stack, str]) -> None:
    """Runs last in this module: it changes the outbox the refusals compare."""
    stack, known = stopped
    waiting = outbox_rows(stack.database_url)

    run = republish(stack.database_url, "--payout-id", known)

    assert run.returncode == 0, run.stderr
    assert run.stdout == "queued 2 events of 1 payouts to be published again\n"
    assert outbox_rows(stack.database_url) == [(row_id, requeued + 1) for row_id, requeued in waiting]
