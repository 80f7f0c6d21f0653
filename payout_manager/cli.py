"""`payout-manager`: the one command line program (SPEC 4)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from payout_manager import logs
from payout_manager import settings as settings_module
from payout_manager.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payout-manager", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="bring the database schema up to date (idempotent)")

    serve = commands.add_parser("serve", help="serve PayoutManagement, Accounter, health and reflection")
    serve.add_argument("--address", help="HOST:PORT to listen on (default: PM_GRPC_ADDRESS)")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port")

    party = commands.add_parser("party-management", help="the reference PartyManagement server")
    party.add_argument("--config", type=Path, required=True, help="the JSON file of parties and shops")
    party.add_argument("--address", help="HOST:PORT to listen on (default: PM_PARTY_MANAGEMENT_ADDRESS)")

    events = commands.add_parser("events", help="read the topic and print each event as one JSON line")
    events.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event, not the newest"
    )
    events.add_argument("--payout-id", help="print only this payout's events")
    events.add_argument(
        "--group", help="consumer group to join and resume (default: a group of its own for this run)"
    )
    events.add_argument("--max-events", type=int, help="stop after printing this many events")
    events.add_argument("--idle-timeout", type=float, help="stop when no event arrives for this many seconds")

    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # gRPC's C core writes its own lines, not JSON, to stderr: at its default verbosity one per
    # failed TLS handshake, which any stranger can cause. Kept to its errors unless the operator
    # asks otherwise, so that every line stays JSON (`logs`) and no one can flood the log.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        settings = settings_module.load()
        logs.configure(settings.log_level)
        _run(args, settings)
    except SettingsError as error:
        print(f"payout-manager: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@contextlib.contextmanager
def _database_refusal(doing: str) -> Iterator[None]:
    """A database that cannot be reached, or refuses the connection, as one line (never the password)."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as error:
        # psycopg2's first line names host, port and user, never the password.
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "unknown error"
        raise SettingsError(
            f"{doing}, the database is unreachable or refused the connection: {reason}"
        ) from None


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "migrate":
        from payout_manager.storage import migrations

        with _database_refusal("cannot migrate"):
            migrations.upgrade(settings.require_database_url())
    elif args.command == "serve":
        from payout_manager.api import server, tls
        from payout_manager.storage.database import connect_once

        if args.workers < 1:
            raise SettingsError("--workers is malformed: it must be at least 1")
        address = settings_module.address("--address", args.address) if args.address else None
        # Checked once here, so that a wrong password or client certificate stops serve with one
        # line before any worker starts, rather than failing every call.
        tls.party_management_credentials(settings)
        with _database_refusal("cannot serve"):
            connect_once(settings.require_database_url())
        server.serve(settings, address=address or settings.grpc_address, workers=args.workers)
    elif args.command == "party-management":
        from clients.party_management import reference_server

        address = args.address or settings.party_management_address
        try:
            reference_server.serve(args.config, settings_module.address("--address", address), settings)
        except reference_server.ConfigError as error:
            raise SettingsError(str(error)) from None
    elif args.command == "events":
        from payout_manager.events import consumer
        from payout_manager.events.kafka_config import KafkaConnection

        kafka = KafkaConnection.from_settings(settings)
        if args.max_events is not None and args.max_events < 1:
            raise SettingsError("--max-events is malformed: it must be at least 1")
        if args.idle_timeout is not None and not args.idle_timeout > 0:
            raise SettingsError("--idle-timeout is malformed: it must be a positive number of seconds")
        options = consumer.Options(
            kafka,
            settings.kafka_topic,
            from_beginning=args.from_beginning,
            payout_id=args.payout_id,
            group=args.group,
            max_events=args.max_events,
            idle_timeout=args.idle_timeout,
        )
        raise SystemExit(consumer.run(options))
