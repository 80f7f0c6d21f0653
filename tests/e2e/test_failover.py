"""PostgreSQL failover: the primary SIGKILLed, its synchronous standby promoted, nothing answered lost.

Real processes throughout: a primary and a synchronous standby from the embedded wheel (streaming
replication, `synchronous_standby_names`), `serve --workers 2` on libpq's multi-host URL of both
with `target_session_attrs=read-write`, publishing to a real broker. Nothing tells `serve` that the
primary changed: its pool, its relay and its expiry find the new one through the URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import grpc
import psycopg2
import pytest
from support.books import event_sequences, wait_until_true
from support.events import Stack, relay_leaders, wait_for_leader
from support.mixed import FUNDS, assert_nothing_lost, mixed_load
from support.payouts import create, refusal
from support.serving import run_to_exit

from local_stack.postgres import ReplicatedPostgres, create_database
from payout_manager.events.relay import BATCH_SIZE
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.storage.audit import audit_books
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.postgres import replicated_postgres

# What a failover manager (Patroni, pg_auto_failover) takes to see the primary gone and promote.
DETECTION = 1.0
# Calls must be answered OK again within this long of the promotion (issue 15).
RECOVERY_LIMIT = 15.0
AMOUNT = 1_000


@pytest.fixture
def pair() -> Iterator[ReplicatedPostgres]:
    with replicated_postgres("pm-test-failover-") as pair:
        yield pair


@pytest.fixture
def stack(pair: ReplicatedPostgres, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(pair.url(), kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def test_the_primary_killed_under_load_loses_no_answered_call_and_the_service_follows_the_promotion(
    stack: Stack, pair: ReplicatedPostgres
) -> None:
    old_primary = pair.primary.port
    with mixed_load(stack) as load:
        time.sleep(4)
        before = load.completed()
        killed = time.monotonic()
        pair.fail_over(before_promotion=DETECTION)
        promoted = time.monotonic()
        # Long enough past the recovery limit that calls still failing then would show.
        time.sleep(RECOVERY_LIMIT)

    assert pair.primary.port != old_primary and not pair.primary.in_recovery()
    last_failed = load.last_failed_answer()
    recovered = max(0.0, (last_failed or promoted) - promoted)
    failed_in_switch = sum(
        1 for at, code in load.timeline if code != "OK" and killed <= at <= promoted + RECOVERY_LIMIT
    )
    ok_after = sum(1 for at, code in load.timeline if code == "OK" and at > promoted)
    first_ok = min((at for at, code in load.timeline if code == "OK" and at > promoted), default=promoted)
    print(
        f"{before} payouts before the kill, {len(load.expected)} in all; "
        f"{failed_in_switch} answers UNAVAILABLE from the kill on, the last {recovered:.2f} s after "
        f"the promotion ({promoted - killed:.2f} s after the kill); the first OK {first_ok - promoted:.3f} s "
        f"after it, {ok_after} OK answers after it"
    )
    # The switch met calls, they were told to retry, and after it calls succeed again in time.
    assert load.codes["UNAVAILABLE"] > 0
    assert recovered <= RECOVERY_LIMIT
    assert ok_after > 100
    # Every OK answer is on the new primary, the books are whole, every event is on the topic.
    repeated = assert_nothing_lost(stack, load, repeats_allowed=True)
    print(f"events repeated on the topic: {repeated}")
    # At most what the relay had in flight at the kill: one batch.
    assert 0 <= repeated <= BATCH_SIZE
    # The relay's leadership moved: one leader, on the new primary (the URL reaches only it).
    assert relay_leaders(stack.database_url) == 1


@pytest.mark.parametrize("standby_got_it", [False, True], ids=["commit-lost", "answer-lost"])
def test_a_create_in_doubt_at_the_kill_is_unavailable_and_its_retry_with_the_same_id_settles_it(
    stack: Stack, pair: ReplicatedPostgres, standby_got_it: bool
) -> None:
    """The classic doubt: the primary dies while a create's commit waits for the standby.

    Either the standby never got the commit (it was detached) and the payout is gone with the
    primary, or it got the commit's WAL but not the time to acknowledge it (it was paused) and the
    payout survives. The caller is told UNAVAILABLE in both cases and cannot tell which; a retry
    with the same payout id settles it: one payout, one hold, one event.
    """
    served = stack.serve(workers=1)
    shop = stack.world.add_shop(funds=FUNDS)
    standby = pair.standby
    assert standby is not None
    payout_id = f"payout-in-doubt-{standby_got_it}"
    if not standby_got_it:
        _detach(standby.url, pair.primary.url)
    else:
        standby.pause()
    try:
        pending = served.payouts.CreatePayout.future(
            pb.CreatePayoutRequest(
                payout_id=payout_id,
                party_id=shop.party_id,
                shop_id=shop.shop_id,
                cash=party_pb.Cash(amount=AMOUNT, currency="RUB"),
            ),
            timeout=60,
        )
        _wait_for_commit_waiting_on_the_standby(pair.primary.url, sent=standby_got_it)
        pair.primary.kill()
    finally:
        if standby_got_it:
            standby.resume()

    # The caller cannot know whether the payout exists: it is told to retry.
    with pytest.raises(grpc.RpcError) as lost:
        pending.result()
    assert refusal(lost.value) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    # Until a primary is back, so is every other call; never INTERNAL.
    with pytest.raises(grpc.RpcError) as meanwhile:
        served.payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id), timeout=30)
    assert refusal(meanwhile.value) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")

    pair.fail_over()

    try:
        served.payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id), timeout=30)
        survived = True
    except grpc.RpcError as error:
        assert refusal(error) == (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")
        survived = False
    assert survived is standby_got_it
    # The retry with the same id creates the payout, or finds it; another retry finds the same.
    first = _retried(lambda: create(served.payouts, shop.party_id, shop.shop_id, AMOUNT, payout_id=payout_id))
    again = create(served.payouts, shop.party_id, shop.shop_id, AMOUNT, payout_id=payout_id)
    assert again == first
    assert first.status == pb.PAYOUT_STATUS_UNPAID
    assert event_sequences(stack.database_url, [payout_id]) == {payout_id: [1]}
    assert audit_books(stack.database_url) == []


def _detach(standby_url: str, primary_url: str, timeout: float = 30.0) -> None:
    """Stops the standby streaming (an empty primary_conninfo); returns once the primary has no standby."""
    with closing(psycopg2.connect(standby_url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("ALTER SYSTEM SET primary_conninfo = ''")
            cursor.execute("SELECT pg_reload_conf()")
    wait_until_true(
        primary_url, "SELECT count(*) = 0 FROM pg_stat_replication", timeout, "the standby still streams"
    )


def _wait_for_commit_waiting_on_the_standby(primary_url: str, *, sent: bool, timeout: float = 30.0) -> None:
    """Until one commit waits for the synchronous standby; with `sent`, until the primary has also
    sent the standby all the WAL it flushed, the commit's included."""
    waiting = "(SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') = 1"
    if sent:
        waiting += " AND (SELECT min(sent_lsn) FROM pg_stat_replication) >= pg_current_wal_flush_lsn()"
    wait_until_true(primary_url, f"SELECT {waiting}", timeout, "no commit came to wait for the standby")


def _retried(call: Callable[[], pb.Payout], timeout: float = RECOVERY_LIMIT) -> pb.Payout:
    """The call's answer, asked again while it is UNAVAILABLE, as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if refusal(error)[0] is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_migrate_serve_and_the_relay_find_the_primary_when_the_first_host_is_a_standby(
    pair: ReplicatedPostgres, kafka: TestKafka, tmp_path: Path
) -> None:
    pair.fail_over()
    pair.rebuild_standby()
    # The URL names the new standby first now: a read-only server that would refuse every write.
    assert pair.standby is not None and pair.standby.port == pair.ports[0] and pair.standby.in_recovery()
    url = create_database(pair.url(), "pm_failover_migrate")

    migrated = run_to_exit(["migrate"], {"PM_DATABASE_URL": url})

    assert migrated.returncode == 0, migrated.stderr
    stack = Stack(pair.url(), kafka.bootstrap_servers, tmp_path)
    try:
        served = stack.serve(workers=2)
        shop = stack.world.add_shop(funds=FUNDS)
        made = create(served.payouts, shop.party_id, shop.shop_id, AMOUNT)
        assert stack.published({made.payout_id: 1}) != []
        wait_for_leader(stack.database_url)
        assert relay_leaders(stack.database_url) == 1
    finally:
        stack.close()
