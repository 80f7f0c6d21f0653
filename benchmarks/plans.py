"""The plans of the reads' SQL, as PostgreSQL runs them: EXPLAIN (ANALYZE, BUFFERS) of the very
statements the service sends, captured from its own storage code, so they stay the service's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, event

from payout_manager.payouts.ports import PayoutFilter
from payout_manager.storage.database import create_database_engine
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.payouts import Payouts


@contextmanager
def _captured(connection: Connection) -> Iterator[list[tuple[str, Any]]]:
    """Every (statement, parameters) the connection sends to the driver while the block runs."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(connection, "before_cursor_execute", record)


def _plan(connection: Connection, work: Callable[[Connection], object]) -> list[str]:
    """The plan of the last statement `work` sends, run again under EXPLAIN ANALYZE."""
    with _captured(connection) as sent:
        work(connection)
    statement, parameters = sent[-1]
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
        return [str(line) for (line,) in cursor.fetchall()]
    finally:
        cursor.close()


def read_plans(
    database_url: str, party_id: str, shop_id: str, page_size: int, account_id: int, at: datetime
) -> dict[str, list[str]]:
    """The plans of ListPayouts' query for one shop's first page (the service asks for one row
    more than the page, to know whether another follows) and of GetAccount's balances at `at`."""
    engine = create_database_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return {
                "ListPayouts": _plan(
                    connection,
                    lambda c: Payouts(c).list(PayoutFilter(party_id, shop_id), None, page_size + 1),
                ),
                "GetAccount at": _plan(connection, lambda c: Ledger(c).get_account(account_id, at)),
            }
    finally:
        engine.dispose()
