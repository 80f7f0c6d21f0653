"""`payout-manager`: the one command line program (SPEC 4)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

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

    events = commands.add_parser(
        "events",
        help="read the topic, print each event as one JSON line; `events republish` queues stored ones again",
        description="Reads the topic and prints each event as one JSON line.",
    )
    events.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event, not the newest"
    )
    events.add_argument("--payout-id", help="print only this payout's events")
    events.add_argument(
        "--group", help="consumer group to join and resume (default: a group of its own for this run)"
    )
    events.add_argument("--max-events", type=int, help="stop after printing this many events")
    events.add_argument("--idle-timeout", type=float, help="stop when no event arrives for this many seconds")
    events_commands = events.add_subparsers(
        dest="events_command", metavar="SUBCOMMAND", parser_class=_OneLineErrorParser
    )
    republish = events_commands.add_parser(
        "republish",
        help="queue stored events to be published again, in sequence order per payout",
        description=REPUBLISH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chosen = republish.add_mutually_exclusive_group(required=True)
    chosen.add_argument(
        "--payout-id",
        dest="payout_ids",
        metavar="ID",
        nargs="+",
        action="extend",
        help="every event of these payouts (repeatable); an unknown id queues nothing",
    )
    chosen.add_argument(
        "--since",
        metavar="RFC3339",
        type=_since,
        help="every event created at this time or later, e.g. 2026-12-01T10:00:00Z (offset or Z required)",
    )

    return parser


REPUBLISH_DESCRIPTION = """\
Queues the stored events of the payouts named (or of every change since a time) to be published
again, so that a consumer that lost data can rebuild. Needs PM_DATABASE_URL; the relay of a
running `payout-manager serve` publishes them.

Per payout, the events go out from the first one republished through its latest, in sequence
order, and its changes made meanwhile after them: the republish locks each payout as a change
does, so none slips in between. Only a copy the relay was already sending may land before; it is
sent again in its place. A consumer that skips sequence ids at or below the highest it applied
ends with each payout's latest snapshot; one that applies only the next sequence id it lacks ends
with every event. --since takes, for each payout changed since then, its events from the first
such one on, a few hundred payouts per transaction. Prints one line: events and payouts queued.
Bad arguments (an unknown payout, a time that is not RFC 3339, neither or both options) print
one line and exit 2, queueing nothing."""


class _OneLineErrorParser(argparse.ArgumentParser):
    """A parser whose refusals are one line (with where to find the usage), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _since(value: str) -> datetime:
    from payout_manager.events.republish import parse_since

    try:
        return parse_since(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    elif args.command == "events" and args.events_command == "republish":
        _republish(args, settings)
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


def _republish(args: argparse.Namespace, settings: Settings) -> None:
    from payout_manager.errors import Refusal
    from payout_manager.events import republish
    from payout_manager.storage.database import Database, connect_once, create_database_engine

    url = settings.require_database_url()
    with _database_refusal("cannot republish"):
        connect_once(url)
    database = Database(create_database_engine(url, pool_size=1))
    try:
        if args.payout_ids is not None:
            done = republish.republish_payouts(database, args.payout_ids)
        else:
            done = republish.republish_since(database, args.since)
    except republish.UnknownPayoutsError as error:
        print(f"payout-manager: no payout {error}: nothing queued", file=sys.stderr)
        raise SystemExit(2) from None
    except Refusal as error:
        # The database went away part way: the chunks committed stay queued, which is harmless.
        print(f"payout-manager: cannot republish, {error.message}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        database.dispose()
    print(done.summary())
