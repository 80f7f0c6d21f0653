"""`python -m local_stack`: the quick start's demo (what `make run` runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from payout_manager import logs
from payout_manager import settings as settings_module
from payout_manager.settings import SettingsError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack",
        description="the quick start: PostgreSQL, a funded demo shop, PartyManagement, Kafka and serve",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".demo"), help="where the demo keeps its state")
    parser.add_argument(
        "--kafka-port", type=int, default=9092, help="port of the local Kafka broker it starts"
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="serve over mutual TLS with an access policy (certificates made in DATA_DIR/secure)",
    )
    args = parser.parse_args(argv)
    try:
        if not 0 < args.kafka_port <= 65535:
            raise SettingsError("--kafka-port is malformed: it must be a port number")
        settings = settings_module.load()
        logs.configure(settings.log_level)
        from local_stack import demo

        demo.run(args.data_dir, settings, kafka_port=args.kafka_port, secure=args.secure)
    except SettingsError as error:
        print(f"local_stack: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
