"""PM_DATABASE_READ_URL: reads that may be a little stale go to a replica, and the rest do not.

A real primary and a streaming hot standby from the embedded wheel. The standby's replay is paused
(`pg_wal_replay_pause`), so it lags by exactly the changes made since: what `serve` answers from it
is visibly older than the primary, and what it must not answer from it comes from the primary.
The rule under test is `storage/replica.py`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg2
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support.books import wait_until_true
from support.events import ServedWithStub, Stack
from support.payouts import confirm, create, refusal

from local_stack.postgres import SUPERUSER, LocalPostgres
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager_testing.kafka import TestKafka
from payout_manager_testing.postgres import scratch_postgres

FUNDS = 1_000_000
AMOUNT = 1_000


@pytest.fixture
def primary() -> Iterator[LocalPostgres]:
    with scratch_postgres("pm-test-replica-") as server:
        yield server


@pytest.fixture
def standby(primary: LocalPostgres) -> Iterator[LocalPostgres]:
    server = primary.start_standby(primary.data_dir.parent / "standby", name="replica", durable=False)
    yield server
    server.stop()


@pytest.fixture
def stack(primary: LocalPostgres, kafka: TestKafka, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(primary.url, kafka.bootstrap_servers, tmp_path)
    yield stack
    stack.close()


def replica_url(stack: Stack, standby: LocalPostgres) -> str:
    """The stack's database on the standby."""
    return urlsplit(stack.database_url)._replace(netloc=f"{SUPERUSER}@127.0.0.1:{standby.port}").geturl()


def serve_with_replica(stack: Stack, standby: LocalPostgres) -> ServedWithStub:
    return stack.serve(workers=1, env={"PM_DATABASE_READ_URL": replica_url(stack, standby)})


def test_reads_from_a_lagging_replica_are_stale_until_the_caller_names_what_it_has_seen(
    stack: Stack, primary: LocalPostgres, standby: LocalPostgres
) -> None:
    served = serve_with_replica(stack, standby)
    shop = stack.world.add_shop(funds=FUNDS)
    stub = served.payouts
    made = create(stub, shop.party_id, shop.shop_id, AMOUNT)
    caught_up(primary, standby)
    pause_replay(standby)

    confirmed = confirm(stub, made.payout_id)
    later = create(stub, shop.party_id, shop.shop_id, AMOUNT)

    assert confirmed.revision == 2
    # The latest state, from the replica: as it was before the pause.
    latest = stub.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id))
    assert (latest.revision, latest.status) == (1, pb.PAYOUT_STATUS_UNPAID)
    listed = stub.ListPayouts(pb.ListPayoutsRequest(party_id=shop.party_id, shop_id=shop.shop_id))
    assert [(p.payout_id, p.status) for p in listed.payouts] == [(made.payout_id, pb.PAYOUT_STATUS_UNPAID)]
    events = stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=made.payout_id))
    assert [e.sequence_id for e in events.events] == [1]
    # What the caller names, the replica lacks: the primary answers.
    named = stub.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id, revision=2))
    assert (named.revision, named.status) == (2, pb.PAYOUT_STATUS_CONFIRMED)
    after = stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=made.payout_id, after_sequence_id=1))
    assert [e.sequence_id for e in after.events] == [2]
    assert stub.GetPayout(pb.GetPayoutRequest(payout_id=later.payout_id)) == later
    # Unknown everywhere: still NOT_FOUND, once the primary has said so too.
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetPayout(pb.GetPayoutRequest(payout_id="no-such-payout"))
    assert refusal(unknown.value) == (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")

    resume_replay(standby)
    caught_up(primary, standby)
    assert stub.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id)) == confirmed


def test_a_balance_at_a_moment_the_replica_has_passed_comes_from_it_and_a_later_one_from_the_primary(
    stack: Stack, primary: LocalPostgres, standby: LocalPostgres
) -> None:
    served = serve_with_replica(stack, standby)
    shop = stack.world.add_shop(funds=FUNDS)
    accounter = accounter_pb2_grpc.AccounterStub(served.channel)
    funded = now()
    # One more commit after `funded`, so that the replica has replayed past it.
    stack.world.account()
    caught_up(primary, standby)
    pause_replay(standby)
    create(served.payouts, shop.party_id, shop.shop_id, AMOUNT)
    held = now()

    # Later than anything the replica replayed: the primary's balance, with the hold.
    assert balance(accounter, shop.settlement, held).min_available_amount < FUNDS
    # Stop the primary: a read the replica may answer is still answered, the others cannot be.
    primary.stop()
    try:
        past = balance(accounter, shop.settlement, funded)
        with pytest.raises(grpc.RpcError) as fresh:
            balance(accounter, shop.settlement, held)
        with pytest.raises(grpc.RpcError) as current:
            accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=shop.settlement))
    finally:
        LocalPostgres.start(primary.data_dir, port=primary.port, durable=False)
    assert (past.own_amount, past.min_available_amount) == (FUNDS, FUNDS)
    assert refusal(fresh.value) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert refusal(current.value) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


def test_with_the_replica_away_every_read_is_answered_by_the_primary(
    stack: Stack, standby: LocalPostgres
) -> None:
    served = serve_with_replica(stack, standby)
    shop = stack.world.add_shop(funds=FUNDS)
    accounter = accounter_pb2_grpc.AccounterStub(served.channel)
    made = confirm(served.payouts, create(served.payouts, shop.party_id, shop.shop_id, AMOUNT).payout_id)

    standby.stop()

    stub = served.payouts
    assert stub.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id)) == made
    assert stub.GetPayout(pb.GetPayoutRequest(payout_id=made.payout_id, revision=2)) == made
    events = stub.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=made.payout_id))
    assert [e.sequence_id for e in events.events] == [1, 2]
    listed = stub.ListPayouts(pb.ListPayoutsRequest(party_id=shop.party_id))
    assert [p.payout_id for p in listed.payouts] == [made.payout_id]
    assert balance(accounter, shop.settlement, now()).own_amount == FUNDS - made.amount - made.fee


def now() -> datetime:
    # A moment strictly after every commit so far: the history's clock has microseconds.
    time.sleep(0.01)
    return datetime.now(UTC)


def balance(
    accounter: accounter_pb2_grpc.AccounterStub, account_id: int, at: datetime
) -> accounter_pb.Account:
    moment = Timestamp()
    moment.FromDatetime(at)
    return accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=account_id, at=moment), timeout=30)


def caught_up(primary: LocalPostgres, standby: LocalPostgres, timeout: float = 30.0) -> None:
    """Until the standby has replayed everything the primary has written so far."""
    with closing(psycopg2.connect(primary.url)) as connection, connection.cursor() as cursor:
        # Where WAL is inserted, not written: with synchronous_commit off, a commit's WAL may not be
        # written yet.
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        row = cursor.fetchone()
    assert row is not None
    wait_until_true(
        standby.url, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", timeout, "the standby lags", (row[0],)
    )


def pause_replay(standby: LocalPostgres) -> None:
    _execute(standby, "SELECT pg_wal_replay_pause()")
    wait_until_true(
        standby.url, "SELECT pg_get_wal_replay_pause_state() = 'paused'", 30.0, "replay not paused"
    )


def resume_replay(standby: LocalPostgres) -> None:
    _execute(standby, "SELECT pg_wal_replay_resume()")


def _execute(server: LocalPostgres, statement: str) -> None:
    with closing(psycopg2.connect(server.url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
