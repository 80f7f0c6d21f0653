"""Database: units of work against a real PostgreSQL whose connections the server may drop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import psycopg2
import pytest
from sqlalchemy import Connection, text
from support.books import dsn

from payout_manager.errors import Reason, Refusal
from payout_manager.storage.database import Database, create_database_engine


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    pooled = Database(create_database_engine(database_url, pool_size=1))
    yield pooled
    pooled.dispose()


def backend_pid(connection: Connection) -> int:
    pid: int = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def terminate(database_url: str, pid: int) -> None:
    with closing(psycopg2.connect(dsn(database_url))) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        assert cursor.fetchone() == (True,)


@pytest.mark.parametrize("kind", ["transaction", "read"])
def test_work_on_a_pooled_connection_the_server_dropped_runs_again_on_a_new_one(
    database: Database, database_url: str, kind: str
) -> None:
    run = database.transaction if kind == "transaction" else database.read
    dropped = run(backend_pid)
    terminate(database_url, dropped)

    again = run(backend_pid)

    assert again != dropped


def test_work_lost_between_statements_reruns_whole_and_commits_once(
    database: Database, database_url: str
) -> None:
    runs: list[int] = []

    def work(connection: Connection) -> int:
        pid = backend_pid(connection)
        runs.append(pid)
        if len(runs) == 1:
            terminate(database_url, pid)
        connection.execute(text("CREATE TABLE IF NOT EXISTS pm_rerun_probe (run int)"))
        connection.execute(text("INSERT INTO pm_rerun_probe VALUES (:n)"), {"n": len(runs)})
        return pid

    try:
        database.transaction(work)
        rows = database.read(lambda c: c.execute(text("SELECT run FROM pm_rerun_probe")).scalars().all())
    finally:
        database.transaction(lambda c: c.execute(text("DROP TABLE IF EXISTS pm_rerun_probe")))
    assert len(runs) == 2
    assert rows == [2]


def test_a_database_that_stays_away_is_unavailable_not_an_error() -> None:
    unreachable = Database(create_database_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1))
    try:
        with pytest.raises(Refusal) as refused:
            unreachable.read(backend_pid)
    finally:
        unreachable.dispose()
    assert refused.value.reason is Reason.DATABASE_UNAVAILABLE


# A pool of one connection: a slot not given back shows as the next call waiting for it in vain.


def test_a_read_whose_connection_is_lost_as_it_goes_back_keeps_its_result_and_its_pool_slot(
    database: Database, database_url: str
) -> None:
    def read_then_lose(connection: Connection) -> int:
        pid = backend_pid(connection)
        terminate(database_url, pid)
        return pid

    # Once before on the same connection: its isolation level then needs a statement to undo.
    database.read(backend_pid)
    lost = database.read(read_then_lose)

    # The next read gets a connection at once, a new one.
    assert database.read(backend_pid) != lost
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_transaction_whose_connection_is_lost_before_commit_is_unavailable_and_frees_its_slot(
    database: Database, database_url: str
) -> None:
    def write_then_lose(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE IF NOT EXISTS pm_lost_commit_probe (n int)"))
        connection.execute(text("INSERT INTO pm_lost_commit_probe VALUES (1)"))
        terminate(database_url, backend_pid(connection))

    try:
        with pytest.raises(Refusal) as refused:
            database.transaction(write_then_lose)
        # Whether COMMIT got there is the caller's doubt; here it cannot have (the session was gone).
        exists = database.read(
            lambda c: c.execute(text("SELECT to_regclass('pm_lost_commit_probe')")).scalar()
        )
    finally:
        database.transaction(lambda c: c.execute(text("DROP TABLE IF EXISTS pm_lost_commit_probe")))
    assert refused.value.reason is Reason.DATABASE_UNAVAILABLE
    assert exists is None


def test_a_refusal_of_work_whose_connection_was_lost_reaches_the_caller_unchanged(
    database: Database, database_url: str
) -> None:
    def refuse_after_losing(connection: Connection) -> None:
        connection.execute(text("SELECT 1"))
        terminate(database_url, backend_pid(connection))
        raise Refusal(Reason.INSUFFICIENT_FUNDS, "no money")

    with pytest.raises(Refusal) as refused:
        database.transaction(refuse_after_losing)

    assert refused.value.reason is Reason.INSUFFICIENT_FUNDS
    assert database.read(lambda c: c.execute(text("SELECT 1")).scalar()) == 1
