"""Benchmarks the payout manager on this machine and prints a table.

    .venv/bin/python -m benchmarks [--workers 2] [--in-flight 32] [--seconds 30] [--quick] ...
    make bench

Starts everything from nothing (benchmarks/stack.py: durable PostgreSQL from the wheel, Kafka when
a JDK is present, the reference PartyManagement server with 1000 funded shops and one hot shop,
`payout-manager serve --workers N`) and drives it over real gRPC with ghz:

  (a) CreatePayout over 1000 shops;  (b) create, then confirm every payout created;
  (c) CreatePayout on one hot shop;  a sweep of (a) over calls in flight, drawn as a chart;
  a soak of (a) watching each worker's memory;
  the limit: the SQL of one CreatePayout replayed by pgbench against the same PostgreSQL, with
  and without the shared fee account, and (a)'s throughput as a share of each;
  security: (a) on a second serve behind mutual TLS and an access policy, against (a) in
  plaintext without one, in turns.

At the end it checks the books and the topic. It exits non-zero when a call failed or the books
do not hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import grpc

from benchmarks import chart, ghz, replay, report
from benchmarks.measure import Meter, Row, RssSamples
from benchmarks.profile import Profile
from benchmarks.scenarios import Bench, create_over_shops, create_then_confirm, hot_shop
from benchmarks.stack import Running, running
from benchmarks.topic import TopicReader, stored_events, topic_problems
from local_stack.kafka import KAFKA_VERSION
from payout_manager.storage.audit import audit_books

SHOPS = 1000
DEFAULT_CHART = Path("resource/benchmark-throughput.png")
DEFAULT_PROFILE = Path("resource/benchmark-profile.svg")
PROFILE_SECONDS = 30.0
QUICK = {
    "seconds": 3.0,
    "warmup": 1.0,
    "soak_seconds": 8.0,
    "sweep": [1, 8, 32],
    "sweep_seconds": 2.0,
    "profile": None,
}
RSS_LIMIT_MB = 200.0
RSS_GROWTH_LIMIT_MB = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="serve --workers")
    parser.add_argument("--in-flight", type=int, default=32, help="calls in flight in (a), (b), (c)")
    parser.add_argument("--seconds", type=float, default=30.0, help="each scenario, and each pgbench run")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured load before the scenarios")
    parser.add_argument("--soak-seconds", type=float, default=300.0, help="the memory soak of (a)")
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64],
        help="calls in flight for the chart, comma-separated",
    )
    parser.add_argument("--sweep-seconds", type=float, default=10.0, help="each point of the sweep")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="where the PNG goes")
    parser.add_argument(
        "--profile",
        type=Path,
        default=DEFAULT_PROFILE,
        help=f"a py-spy flame graph of worker 1 over the soak's first {PROFILE_SECONDS:g} s (SVG)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds of everything (for tests): " + ", ".join(f"{k} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as resources:
        _progress(
            f"starting PostgreSQL, Kafka, PartyManagement ({SHOPS} shops), serve --workers {args.workers}"
        )
        stack = resources.enter_context(
            running(shops=SHOPS, workers=args.workers, hot_shop=True, secured=True)
        )
        topic = None
        if stack.bootstrap_servers is not None:
            topic = TopicReader(stack.bootstrap_servers, stack.topic)
            resources.callback(topic.close)
        protoset = ghz.write_protoset(stack.directory / "payout_manager.protoset")
        bench = Bench(ghz.Target(stack.address, protoset, args.workers), Meter(stack, topic), SHOPS)
        print("\n".join(report.header(stack.database_url, _versions(stack), _settings(args))))
        rows = _scenarios(bench, args)
        security = _security(bench, stack, args)
        sweep = _sweep(bench, args)
        soak = _soak(bench, args)
        _limits(stack, rows[1], args)
        problems = _books(stack, topic)
        print(f"chart: {chart.draw(sweep, args.chart, workers=args.workers, shops=SHOPS)}")
    failed = _errors([*rows, *security, *sweep, soak])
    return 1 if failed or problems else 0


def _versions(stack: Running) -> dict[str, str]:
    kafka = KAFKA_VERSION if stack.bootstrap_servers else "none (no JDK: events stay in the outbox)"
    return {"Kafka": kafka, "grpcio": grpc.__version__, "ghz": ghz.ghz_version()}


def _settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "serve --workers": str(args.workers),
        "calls in flight": str(args.in_flight),
        "scenario": f"{args.seconds:g} s",
        "warm-up": f"{args.warmup:g} s",
        "soak": f"{args.soak_seconds:g} s",
        "shops": f"{SHOPS} + 1 hot",
    }


def _scenarios(bench: Bench, args: argparse.Namespace) -> list[Row]:
    n, seconds = args.in_flight, args.seconds
    print(f"\nscenarios: {n} calls in flight, {seconds:g} s each")
    print(report.table_header())
    rows = [
        _printed(
            "warm-up (a), not measured",
            lambda name: create_over_shops(bench, name, in_flight=n, seconds=args.warmup),
        ),
        _printed(
            f"(a) create, {SHOPS} shops",
            lambda name: create_over_shops(bench, name, in_flight=n, seconds=seconds),
        ),
        _printed(
            "(b) create then confirm",
            lambda name: create_then_confirm(bench, name, in_flight=n, seconds=seconds),
        ),
        _printed(
            "(c) create, one hot shop", lambda name: hot_shop(bench, name, in_flight=n, seconds=seconds)
        ),
    ]
    print(report.NOTES)
    return rows


def _security(bench: Bench, stack: Running, args: argparse.Namespace) -> list[Row]:
    """(a) in plaintext without a policy and over mutual TLS with one, twice each, A B B A."""
    assert stack.secured is not None
    files = stack.secured.files
    cert, key = files.client("treasury")
    tls = (files.ca, cert, key)
    secured = replace(bench, target=replace(bench.target, address=stack.secured.address, tls=tls))
    n, seconds = args.in_flight, args.seconds
    print(f"\nsecurity: (a) in plaintext without a policy and over mutual TLS with one, {seconds:g} s each")
    print(report.table_header())
    kinds = {"plaintext, no policy": bench, "mutual TLS + policy": secured}
    rows: dict[str, list[Row]] = {kind: [] for kind in kinds}
    # In the order A B B A, so that a drift of the machine over the four windows (the database
    # growing, caches warming) weighs on both alike.
    for turn, order in ((1, list(kinds)), (2, list(kinds)[::-1])):
        for kind in order:
            rows[kind].append(_printed(f"(a) {kind} {turn}", _creates_on(kinds[kind], n, seconds)))
    rate = {kind: sum(r.payouts for r in made) / sum(r.seconds for r in made) for kind, made in rows.items()}
    plain, secure = rate["plaintext, no policy"], rate["mutual TLS + policy"]
    print(
        f"  mutual TLS + policy: {secure:.1f} payouts/s; plaintext: {plain:.1f}; {secure / plain:.3f} of it"
    )
    return [row for made in rows.values() for row in made]


def _creates_on(bench: Bench, in_flight: int, seconds: float) -> Callable[[str], Row]:
    return lambda name: create_over_shops(bench, name, in_flight=in_flight, seconds=seconds)


def _sweep(bench: Bench, args: argparse.Namespace) -> list[Row]:
    print(f"\nsweep: (a) at each number of calls in flight, {args.sweep_seconds:g} s each")
    print(report.table_header())
    return [_printed(f"(a) {n} in flight", _creates_on(bench, n, args.sweep_seconds)) for n in args.sweep]


def _soak(bench: Bench, args: argparse.Namespace) -> Row:
    print(f"\nsoak: (a) for {args.soak_seconds:g} s, each worker's RSS sampled")
    print(report.table_header())
    samples = RssSamples(bench.meter.workers(), interval=min(5.0, args.soak_seconds / 12))
    profile = None
    if args.profile is not None:
        seconds = min(PROFILE_SECONDS, args.soak_seconds)
        profile = Profile(bench.meter.workers()[0], seconds, args.profile)
    row = _printed(
        f"(a) soak {args.soak_seconds:g} s",
        lambda name: create_over_shops(
            bench, name, in_flight=args.in_flight, seconds=args.soak_seconds, rss=samples
        ),
    )
    for worker, (peak, growth) in enumerate(zip(samples.peak_mb(), samples.growth_mb(), strict=True), 1):
        flags = [
            *([f"over {RSS_LIMIT_MB:g} MB"] if peak > RSS_LIMIT_MB else []),
            *([f"grew over {RSS_GROWTH_LIMIT_MB:g} MB"] if growth > RSS_GROWTH_LIMIT_MB else []),
        ]
        print(
            f"worker {worker}: peak RSS {peak:.0f} MB, growth {growth:+.1f} MB"
            " (mean of the last fifth of the soak minus mean of the second fifth)"
            + (": " + ", ".join(flags).upper() if flags else ": flat")
        )
    if profile is not None:
        print(f"profile of worker 1 (CPU: samples holding the GIL): {profile.finish()}")
    return row


def _limits(stack: Running, a: Row, args: argparse.Namespace) -> None:
    print(
        f"\nlimit: the SQL of one CreatePayout replayed by pgbench, {args.in_flight} clients,"
        f" {args.seconds:g} s, against the same PostgreSQL"
    )
    for shared, label in ((True, "with the shared fee account"), (False, "without it")):
        _progress(f"pgbench {label}")
        tps = replay.limit(stack.postgres.url, clients=args.in_flight, seconds=args.seconds, shared=shared)
        print(f"  {label:28} {tps:9.1f} tx/s;  (a) {a.rate:.1f} payouts/s is {a.rate / tps:.3f} of it")


def _books(stack: Running, topic: TopicReader | None) -> list[str]:
    _progress("checking the books and the topic")
    problems = audit_books(stack.database_url)
    checked = "the ledger and every payout's plans and events"
    if topic is None:
        checked += " (no Kafka: the topic is not checked)"
    else:
        stored = stored_events(stack.database_url)
        problems += topic_problems(stored, topic.deliveries())
        checked += f", and the topic: {len(stored)} events, each published once, in order"
    print(f"\nbooks: OK: {checked}" if not problems else f"\nbooks: {len(problems)} PROBLEMS")
    for problem in problems:
        print(f"  {problem}")
    return problems


def _errors(rows: list[Row]) -> bool:
    """Prints every failed call by scenario and status code; True if there was any."""
    failed = [
        (row.name, calls.method, code, n)
        for row in rows
        for calls in row.calls
        for code, n in calls.errors.items()
    ]
    for name, method, code, n in failed:
        print(f"ERRORS: {name}: {method}: {code} x {n}")
    return bool(failed)


def _printed(name: str, run: Callable[[str], Row]) -> Row:
    _progress(name)
    row = run(name)
    print(report.table_row(row), flush=True)
    return row


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
