"""The benchmark's limit replays what the server really sends for one CreatePayout.

A real create's statements are captured as the driver sends them (psycopg2's LoggingConnection)
and compared with the pgbench script's, statement by statement: the procedure each one calls and
with how many arguments. A change to the create path that the replay misses fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from psycopg2.extras import LoggingConnection
from sqlalchemy import create_engine

from benchmarks import replay
from clients.party_management.client import PartyManagementClient
from payout_manager.access.caller import ANONYMOUS
from payout_manager.payouts.model import PayoutRequest
from payout_manager.payouts.service import PayoutService
from payout_manager.storage.database import Database, sqlalchemy_url
from payout_manager.storage.unit_of_work import SqlStorage
from payout_manager_testing.world import World


class PartyManagementServer(Protocol):
    address: str


def signature(statement: str) -> tuple[str, int]:
    """The function a `SELECT f(...)` statement calls, and its number of arguments."""
    found = re.match(r"\s*select\s+(\w+)\s*\(", statement, re.IGNORECASE)
    assert found is not None, statement
    depth, quoted, arguments = 0, False, 1
    for char in statement[found.end() :]:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            if depth == 0:
                break
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            arguments += 1
    return found.group(1).lower(), arguments


class _Captured:
    """A LoggingConnection's log: each statement the driver sent."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def write(self, text: str) -> None:
        if text.strip():
            self.statements.append(text)


@pytest.fixture
def captured(database_url: str, world: World, party_management: PartyManagementServer) -> Iterator[list[str]]:
    statements: list[str] = []

    def logging_connection(dsn: str, **kwargs: Any) -> LoggingConnection:
        connection = LoggingConnection(dsn, **kwargs)
        connection.initialize(_Captured(statements))
        return connection

    engine = create_engine(
        sqlalchemy_url(database_url), pool_size=1, connect_args={"connection_factory": logging_connection}
    )
    with engine.connect():
        statements.clear()  # the dialect's own, on the first connection

    shop = world.add_shop(funds=10**9)
    client = PartyManagementClient(party_management.address, call_timeout=5)
    try:
        PayoutService(SqlStorage(Database(engine)), client).create(
            PayoutRequest("", shop.party_id, shop.shop_id, 100_000, "RUB", "", {}), ANONYMOUS
        )
        yield statements
    finally:
        client.close()
        engine.dispose()


def test_the_pgbench_replay_sends_the_statements_of_a_real_create(captured: list[str]) -> None:
    replayed = replay.statements(replay.script(base=1, fee_account="2"))

    assert [signature(s) for s in replayed] == [signature(s) for s in captured]
    assert [signature(s) for s in captured] == [("pm_create_payout", 25)]
