"""The benchmark's limit replays what the server really sends for one CreatePayout.

A real create's statements are captured on the wire (the driver's cursor) and compared with the
pgbench script's, statement by statement: the tables each one writes and whether it locks rows,
waiting or not. A change to the create path that the replay misses fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

import pytest
from sqlalchemy import event

from benchmarks import replay
from clients.party_management.client import PartyManagementClient
from payout_manager.access.caller import ANONYMOUS
from payout_manager.payouts.model import PayoutRequest
from payout_manager.payouts.service import PayoutService
from payout_manager.storage import tables
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.unit_of_work import SqlStorage
from payout_manager_testing.world import World

TABLES = set(tables.metadata.tables)


class PartyManagementServer(Protocol):
    address: str


def signature(statement: str) -> tuple[tuple[str, ...], str]:
    """The tables a statement inserts into or updates, in order, and how it locks rows."""
    text = " ".join(statement.split()).lower()
    written = tuple(table for table in re.findall(r"(?:insert into|update) (\w+)", text) if table in TABLES)
    locking = "skip locked" if "skip locked" in text else "waits" if "for no key update" in text else "none"
    return written, locking


@pytest.fixture
def captured(database_url: str, world: World, party_management: PartyManagementServer) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = create_database_engine(database_url, pool_size=1)

    @event.listens_for(engine, "before_cursor_execute")
    def capture(*args: object) -> None:
        statements.append(str(args[2]))

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
    assert [signature(s) for s in captured] == [
        (("payout",), "none"),
        (("posting_plan",), "none"),
        ((), "waits"),
        ((), "skip locked"),
        (("account_slot", "account_balance", "posting_plan_account", "posting"), "none"),
        (("payout_event", "payout_event_outbox"), "none"),
    ]
