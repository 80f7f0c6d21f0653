"""The limit: the SQL work of one CreatePayout, replayed by pgbench against the same PostgreSQL.

The script sends what the server sends for a create without a payout id (the server makes it), in
the same simple protocol as psycopg2: one call of the stored procedure `pm_create_payout` in
autocommit, which inserts the payout and its posting plan, locks the shop's settlement account
whole and one free slot of the shop's payout account and of the fee account, writes the slots,
their history, the plan's nets and the postings, and stores the event with its outbox row.

`shared=True` credits every fee to one system account, as the realistic terms do (it has a slot
per client, as the service's grows under load); `shared=False` gives every shop a fee account of
its own.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection

from benchmarks.limits import UNLIMITED
from local_stack.postgres import create_database, postgres_bin_dir
from payout_manager.accounting.rules import Batch, Posting
from payout_manager.storage import migrations
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.ledger import Ledger

SHOPS = 1000
CURRENCY = "RUB"
FUNDS = 10**15
# A payout of 100000 with the terms' 1% fee, and an event about the size the service stores.
AMOUNT = 100_000
FEE = 1_000
EVENT_BYTES = 700

_SCRIPT = """
\\set n random(0, {last_shop})
\\set settlement {base} + 3 * :n
\\set payout_account :settlement + 1
\\set fee_account {fee_account}
\\set r random(1, 1000000000000000)
SELECT pm_create_payout('r-' || :client_id || '-' || :r, 'party-' || :n, 'shop-' || :n, 'UNPAID', 1,
  now(), {debit}, '', 'tool-1', {amount}, {fee}, '{currency}',
  '[{{"source": ["merchant.settlement", 1], "destination": ["merchant.payout", 2], "amount": {amount},
     "currency": "{currency}", "details": "payout"}},
    {{"source": ["merchant.settlement", 1], "destination": ["system.settlement", 3], "amount": {fee},
     "currency": "{currency}", "details": "fee"}}]'::jsonb, '{{}}'::jsonb, 'anonymous',
  'payout_r-' || :client_id || '-' || :r, ARRAY[:settlement, :settlement]::bigint[],
  ARRAY[:payout_account, :fee_account]::bigint[], ARRAY[{amount}, {fee}]::bigint[],
  ARRAY['{currency}', '{currency}']::text[], ARRAY['payout', 'fee']::text[], ARRAY[:settlement]::bigint[],
  gen_random_uuid(), decode(repeat('ab', {event_bytes}), 'hex'), {max_unresolved});
"""


def _prepare(server_url: str, *, shared: bool, clients: int) -> tuple[str, str]:
    """A fresh database with SHOPS funded shops; returns its URL and the pgbench script."""
    name = "pm_replay_shared" if shared else "pm_replay_own"
    _drop(server_url, name)
    database_url = create_database(server_url, name)
    migrations.upgrade(database_url)
    database = Database(create_database_engine(database_url, pool_size=1))

    def accounts(connection: Connection) -> tuple[int, int]:
        ledger = Ledger(connection)
        funding = ledger.create_account(CURRENCY, "funding").id
        system = ledger.create_account(CURRENCY, "system settlement").id
        now = datetime.now(UTC)
        first = None
        for n in range(SHOPS):
            settlement, _payout, _fee = (
                ledger.create_account(CURRENCY, kind).id for kind in ("settlement", "payout", "fee")
            )
            first = settlement if first is None else first
            plan = f"funding_{n}"
            ledger.hold(plan, Batch(1, (Posting(funding, settlement, FUNDS, CURRENCY, "funding"),)), now)
            ledger.commit_plan(plan, now)
        assert first is not None
        return first, system

    try:
        base, system = database.transaction(accounts)
    finally:
        database.dispose()
    if shared:
        # The service's shared account grows a slot per concurrent payout; start it grown.
        _run_sql(
            database_url,
            "INSERT INTO account_slot (account_id, slot, own_amount, held_debit, held_credit)"  # noqa: S608 (ints)
            f" SELECT {system}, s, 0, 0, 0 FROM generate_series(1, {clients + 1}) AS s",
        )
    return database_url, script(base=base, fee_account=str(system) if shared else ":settlement + 2")


def script(*, base: int, fee_account: str) -> str:
    """The pgbench script: shop n's settlement account is base + 3n, its payout account next."""
    return _SCRIPT.format(
        last_shop=SHOPS - 1,
        base=base,
        fee_account=fee_account,
        amount=AMOUNT,
        fee=FEE,
        debit=AMOUNT + FEE,
        currency=CURRENCY,
        event_bytes=EVENT_BYTES,
        max_unresolved=UNLIMITED,
    )


def statements(text: str) -> list[str]:
    """The SQL statements of a pgbench script, without its meta-commands."""
    lines = [line for line in text.splitlines() if not line.startswith("\\set")]
    return [part.strip() for part in " ".join(lines).split(";") if part.strip()]


def limit(server_url: str, *, clients: int, seconds: float, shared: bool) -> float:
    """pgbench's transactions per second for the replayed CreatePayout at `clients` in flight."""
    database_url, script = _prepare(server_url, shared=shared, clients=clients)
    with tempfile.TemporaryDirectory(prefix="pm-replay-") as directory:
        path = Path(directory) / "create_payout.sql"
        path.write_text(script)
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "pgbench"),
                "--no-vacuum",
                "--protocol=simple",
                f"--client={clients}",
                f"--jobs={min(clients, 2)}",
                f"--time={max(1, round(seconds))}",
                f"--file={path}",
                database_url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if result.returncode != 0 or found is None or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    # The procedure says by its result whether it stored the payout, which pgbench does not
    # read: every transaction must have made one.
    processed = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    stored = int(_run_sql(database_url, "SELECT count(*) FROM payout"))
    if processed is None or stored != int(processed.group(1)):
        raise RuntimeError(f"pgbench made {stored} payouts in:\n{result.stdout}")
    _drop(server_url, database_url.rsplit("/", 1)[1])
    return float(found.group(1))


def _run_sql(database_url: str, statement: str) -> str:
    """What psql prints of `statement`'s result, unaligned and without headers."""
    return subprocess.run(
        [
            str(postgres_bin_dir() / "psql"),
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
            statement,
            database_url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _drop(server_url: str, name: str) -> None:
    _run_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
