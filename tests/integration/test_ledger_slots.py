"""Account slots on real PostgreSQL: a credit to an account whose only slot is locked does not wait."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from payout_manager.accounting.rules import Batch, Posting
from payout_manager.storage import audit
from payout_manager.storage.database import create_database_engine
from payout_manager.storage.ledger import Ledger


def test_a_credit_to_an_account_whose_slot_is_locked_takes_a_new_slot_and_commits_there(
    database_url: str,
) -> None:
    engine = create_database_engine(database_url, pool_size=2)
    now = datetime.now(UTC)
    try:
        with engine.begin() as setup:
            ledger = Ledger(setup)
            source, target = (
                ledger.create_account("RUB", "source").id,
                ledger.create_account("RUB", "target").id,
            )
        with engine.connect() as holder, engine.connect() as crediting:
            holder.begin()
            holder.execute(
                text("SELECT 1 FROM account_slot WHERE account_id = :id FOR NO KEY UPDATE"), {"id": target}
            )
            with crediting.begin():
                # Were the credit to wait for slot 0, this would fail instead of hanging.
                crediting.execute(text("SET LOCAL lock_timeout = '2s'"))
                held = Ledger(crediting).hold(
                    "slots-1", Batch(1, (Posting(source, target, 100, "RUB"),)), now, checked=[source]
                )
            holder.rollback()
        with engine.begin() as connection:
            ledger = Ledger(connection)
            ledger.commit_plan("slots-1", now)
            slots: dict[int, int] = dict(
                connection.execute(
                    text("SELECT slot, own_amount FROM account_slot WHERE account_id = :id"), {"id": target}
                ).all()
            )
            found = ledger.get_account(target)
            problems = audit.problems(connection)
    finally:
        engine.dispose()

    assert list(held) == [source]
    assert len(slots) == 2
    assert slots[0] == 0
    assert sorted(slots.values()) == [0, 100]
    assert (found.own_amount, found.min_available_amount, found.max_available_amount) == (100, 100, 100)
    assert problems == []
