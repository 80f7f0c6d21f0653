"""The pieces every stack of the kit is made of, each started one way and cleaned up by its block.

`PayoutManagerStack`, the pytest fixtures and the project's own test stacks all start their
database and their reference PartyManagement server through these.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from local_stack.postgres import create_database
from payout_manager.storage import migrations
from payout_manager_testing.processes import Process, free_port, wait_until_listening

CONFIG_NAME = "party-management.json"


@contextlib.contextmanager
def database(server_url: str, prefix: str = "pm_kit") -> Iterator[str]:
    """A new database on the server, migrated to the newest schema; dropped when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_database(server_url, name)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with contextlib.closing(psycopg2.connect(server_url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass(frozen=True)
class PartyManagement:
    """The reference PartyManagement server: where it listens and the config it rereads."""

    address: str
    config_path: Path
    process: Process


@contextlib.contextmanager
def party_management(directory: Path) -> Iterator[PartyManagement]:
    """`payout-manager party-management` on a free port and an empty config in `directory` (which
    `World` fills as shops are added); stopped when the block ends."""
    config = directory / CONFIG_NAME
    config.write_text(json.dumps({"system_accounts": {}, "parties": []}))
    started = start_party_management(directory, config, f"127.0.0.1:{free_port()}")
    try:
        yield started
    finally:
        started.process.stop(timeout=20)


def start_party_management(
    directory: Path, config: Path, address: str, *, restart: bool = False
) -> PartyManagement:
    """The reference server on `address` with `config`, its log in `directory`; returns once it
    listens. `restart`: a server that was on `address` before (its log gets a new file)."""
    log = directory / "party-management.log"
    if restart:
        log = directory / f"party-management-{uuid.uuid4().hex[:8]}.log"
    process = Process(["party-management", "--config", str(config), "--address", address], {}, log)
    try:
        wait_until_listening(address, process)
    except BaseException:
        process.stop(timeout=20)
        raise
    return PartyManagement(address, config, process)
