"""The payout procedures of migration 0005 on real PostgreSQL, called as the service calls them.

Each refusal the procedures raise as a SQLSTATE reaches the caller as the refusal of the one error
table, and leaves nothing behind; a create whose credited account has its only slot locked by
another transaction takes a new slot instead of waiting; a change names the revision it moves
from, so a stale one does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from payout_manager.accounting.rules import INT64_MAX, Batch, Posting
from payout_manager.errors import Reason, Refusal
from payout_manager.payouts import model
from payout_manager.payouts.cash_flow import AccountType, CashFlowAccount, CashFlowPosting
from payout_manager.payouts.model import Accounting, PayoutRequest, PayoutStatus
from payout_manager.storage import audit
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.unit_of_work import SqlStorage

FUNDS = 1_000_000


@dataclass(frozen=True)
class Accounts:
    settlement: int
    payout: int
    fee: int
    euro: int


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url, pool_size=3)
    yield engine
    engine.dispose()


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        ledger = Ledger(connection)
        funding, settlement, payout, fee = (
            ledger.create_account("RUB", name).id for name in ("funding", "settlement", "payout", "fee")
        )
        euro = ledger.create_account("EUR", "euro").id
        ledger.hold(f"fund-{settlement}", Batch(1, (Posting(funding, settlement, FUNDS, "RUB"),)), now)
        ledger.commit_plan(f"fund-{settlement}", now)
    return Accounts(settlement, payout, fee, euro)


def _flow(
    source: int, destination: int, amount: int, fee_account: int, fee: int
) -> tuple[CashFlowPosting, ...]:
    settlement = CashFlowAccount(AccountType.MERCHANT_SETTLEMENT, source)
    return (
        CashFlowPosting(
            settlement, CashFlowAccount(AccountType.MERCHANT_PAYOUT, destination), amount, "RUB", "payout"
        ),
        CashFlowPosting(
            settlement, CashFlowAccount(AccountType.SYSTEM_SETTLEMENT, fee_account), fee, "RUB", "fee"
        ),
    )


def _create(
    storage: SqlStorage, payout_id: str, flow: tuple[CashFlowPosting, ...], currency: str = "RUB"
) -> bool:
    request = PayoutRequest(payout_id, "party", "shop", sum(p.amount for p in flow), currency, "", {})
    payout, event = model.create(
        request,
        payout_tool_id="tool",
        amount=flow[0].amount,
        fee=flow[1].amount,
        cash_flow=flow,
        now=datetime.now(UTC),
        initiator="test",
    )
    batch = Batch(
        1,
        tuple(
            Posting(p.source.account_id, p.destination.account_id, p.amount, p.currency, p.details)
            for p in flow
        ),
    )
    return storage.create(
        payout, replace(event, event_id=str(uuid.uuid4())), batch, [flow[0].source.account_id], 1_000
    )


def _rows(engine: Engine) -> list[int]:
    """How many payouts, plans and outbox rows there are."""
    with engine.connect() as connection:
        return [
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("payout", "posting_plan", "payout_event_outbox")
        ]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("more than the funds", Reason.INSUFFICIENT_FUNDS),
        ("an account that does not exist", Reason.ACCOUNT_NOT_FOUND),
        ("an account in another currency", Reason.CURRENCY_MISMATCH),
        ("amounts past int64", Reason.AMOUNT_OUT_OF_RANGE),
    ],
)
def test_a_refused_create_gets_its_refusal_and_stores_nothing(
    engine: Engine, accounts: Accounts, case: str, reason: Reason
) -> None:
    storage = SqlStorage(Database(engine))
    flows = {
        "more than the funds": _flow(accounts.settlement, accounts.payout, FUNDS, accounts.fee, 1),
        "an account that does not exist": _flow(accounts.settlement, 10**12, 100, accounts.fee, 1),
        "an account in another currency": _flow(accounts.settlement, accounts.euro, 100, accounts.fee, 1),
        "amounts past int64": _flow(accounts.settlement, accounts.payout, INT64_MAX, accounts.fee, INT64_MAX),
    }
    before = _rows(engine)

    with pytest.raises(Refusal) as refused:
        _create(storage, f"refused-{case}", flows[case])

    assert refused.value.reason is reason
    assert _rows(engine) == before
    with engine.connect() as connection:
        assert audit.problems(connection) == []
    if reason is Reason.INSUFFICIENT_FUNDS:
        assert str(accounts.settlement) in refused.value.message
    if reason is Reason.CURRENCY_MISMATCH:
        assert [v.field for v in refused.value.violations] == ["batch.postings[0].currency"]


def test_a_create_whose_fee_slot_is_locked_takes_a_new_slot_instead_of_waiting(
    engine: Engine, accounts: Accounts
) -> None:
    storage = SqlStorage(Database(engine))
    flow = _flow(accounts.settlement, accounts.payout, 100, accounts.fee, 7)
    with engine.connect() as holder, ThreadPoolExecutor(1) as thread:
        holder.begin()
        holder.execute(
            text("SELECT 1 FROM account_slot WHERE account_id = :id FOR NO KEY UPDATE"), {"id": accounts.fee}
        )
        creating = thread.submit(_create, storage, "locked-fee", flow)
        try:
            # Were the create to wait for slot 0, it would still be waiting here.
            created = creating.result(timeout=10)
        finally:
            holder.rollback()
    assert created
    with engine.connect() as connection:
        slots: dict[int, int] = dict(
            connection.execute(
                text("SELECT slot, held_credit FROM account_slot WHERE account_id = :id"),
                {"id": accounts.fee},
            ).all()
        )
        problems = audit.problems(connection)

    assert len(slots) == 2 and slots[0] == 0
    assert sorted(slots.values()) == [0, 7]
    assert problems == []


def test_a_change_from_a_revision_that_is_gone_does_nothing(engine: Engine, accounts: Accounts) -> None:
    storage = SqlStorage(Database(engine))
    assert _create(storage, "stale", _flow(accounts.settlement, accounts.payout, 100, accounts.fee, 1))
    current = storage.payout("stale")
    assert current is not None
    confirm = model.transition(current, PayoutStatus.CONFIRMED, now=datetime.now(UTC), initiator="test")
    assert confirm.event is not None

    first = storage.change(
        confirm.payout, replace(confirm.event, event_id=str(uuid.uuid4())), Accounting.COMMIT, None
    )
    again = storage.change(
        confirm.payout, replace(confirm.event, event_id=str(uuid.uuid4())), Accounting.COMMIT, None
    )

    stored = storage.payout("stale")
    assert (first, again) == (True, False)
    assert stored is not None and (stored.status, stored.revision) == (PayoutStatus.CONFIRMED, 2)
    with engine.connect() as connection:
        assert audit.problems(connection) == []
