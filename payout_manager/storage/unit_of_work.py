"""The payout service's storage on PostgreSQL: reads through Payouts, writes through the procedures."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from payout_manager.accounting.rules import Account, Batch
from payout_manager.payouts.model import Accounting, Payout, PayoutEvent
from payout_manager.payouts.ports import UnitOfWork
from payout_manager.storage import procedures
from payout_manager.storage.database import Database
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.payouts import Payouts, fetch_payout
from payout_manager.storage.replica import Reads

T = TypeVar("T")


@dataclass(frozen=True)
class SqlUnitOfWork:
    payouts: Payouts


def _unit(connection: Connection) -> SqlUnitOfWork:
    return SqlUnitOfWork(Payouts(connection))


class SqlStorage:
    """The service's `Storage`: each unit of work is one `Database` transaction (or read).

    `replica`: where the reads that may be a little stale go (`storage.replica`).
    """

    def __init__(self, database: Database, replica: Database | None = None) -> None:
        self._database = database
        self._reads = Reads(database, replica)

    def payout(self, payout_id: str, *, stale: bool = False) -> Payout | None:
        def fetch(database: Database) -> Payout | None:
            return database.call(lambda cursor: fetch_payout(cursor, payout_id))

        return (
            self._reads.stale(fetch, settled=lambda found: found is not None)
            if stale
            else fetch(self._database)
        )

    def create(
        self,
        payout: Payout,
        event: PayoutEvent,
        batch: Batch,
        checked: Collection[int],
        max_unresolved: int,
    ) -> bool:
        return self._database.call(
            lambda cursor: procedures.create_payout(cursor, payout, event, batch, checked, max_unresolved)
        )

    def change(
        self, changed: Payout, event: PayoutEvent, accounting: Accounting, revert: Batch | None
    ) -> bool:
        return self._database.call(
            lambda cursor: procedures.change_payout(cursor, changed, event, accounting, revert)
        )

    def accounts(self, account_ids: Collection[int]) -> dict[int, Account]:
        return self._database.read(lambda connection: Ledger(connection).accounts(account_ids))

    def read(self, work: Callable[[UnitOfWork], T]) -> T:
        return self._database.read(lambda connection: work(_unit(connection)))

    def stale_read(self, work: Callable[[UnitOfWork], T], settled: Callable[[T], bool] = lambda _: True) -> T:
        return self._reads.stale(lambda database: database.read(lambda c: work(_unit(c))), settled=settled)
