"""The payout service's storage on PostgreSQL: Database's transactions around Payouts and Ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from payout_manager.payouts.ports import UnitOfWork
from payout_manager.storage.database import Database
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.payouts import Payouts

T = TypeVar("T")


@dataclass(frozen=True)
class SqlUnitOfWork:
    payouts: Payouts
    ledger: Ledger


def _unit(connection: Connection) -> SqlUnitOfWork:
    return SqlUnitOfWork(Payouts(connection), Ledger(connection))


class SqlStorage:
    """The service's `Storage`: each unit of work is one `Database` transaction (or read)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def transaction(self, work: Callable[[UnitOfWork], T]) -> T:
        return self._database.transaction(lambda connection: work(_unit(connection)))

    def read(self, work: Callable[[UnitOfWork], T]) -> T:
        return self._database.read(lambda connection: work(_unit(connection)))
