"""Benchmarks the payout manager on this machine and prints a table.

    .venv/bin/python -m benchmarks [--workers 2] [--in-flight 32] [--seconds 30] [--quick] ...
    make bench

Starts everything from nothing (benchmarks/stack.py: durable PostgreSQL from the wheel, Kafka when
a JDK is present, the reference PartyManagement server with 1000 funded shops and one hot shop,
`payout-manager serve --workers N`) and drives it over real gRPC with ghz:

  (a) CreatePayout over 1000 shops;  (b) create, then confirm every payout created;
  (c) CreatePayout on one hot shop;  a sweep of (a) over calls in flight, drawn as a chart;
  a soak of (a) watching each worker's memory;
  the reads: ListPayouts of one shop (a page of 100) and Accounter.GetAccount of the shared fee
  account at a past moment;
  the limit: the SQL of one CreatePayout replayed by pgbench against the same PostgreSQL, with
  and without the shared fee account, and (a)'s throughput as a share of each;
  security: (a) on a second serve behind mutual TLS and an access policy, against (a) in
  plaintext without one, in turns.

With --preload N, (a) runs first on the fresh database; then N payouts of the past are stored in
bulk (benchmarks/preload.py) and everything runs on the grown database, (a) compared with the
fresh one.

At the end it checks the books and the topic. It exits non-zero when a call failed or the books
do not hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import grpc

from benchmarks import chart, ghz, plans, preload, replay, report
from benchmarks.measure import Meter, Row, RssSamples
from benchmarks.preload import Preloaded
from benchmarks.profile import Profile
from benchmarks.scenarios import (
    PAGE_SIZE,
    Bench,
    create_over_shops,
    create_then_confirm,
    get_account_at,
    hot_shop,
    list_payouts,
)
from benchmarks.stack import Running, running
from benchmarks.topic import NO_HISTORY, TopicReader, stored_events, topic_problems
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
    "preload": 2000,
}
RSS_LIMIT_MB = 200.0
RSS_GROWTH_LIMIT_MB = 10.0
# The reads' targets: p99 in ms, and (a) on the preloaded database as a share of (a) on a fresh one.
LIST_P99_TARGET_MS = 20.0
ACCOUNT_AT_P99_TARGET_MS = 10.0
PRELOADED_SHARE_TARGET = 0.90
# The write path's targets (issue 13): (a)'s payouts/s and p99 ms, (b)'s payouts/s, (c) as a share
# of (a), and serve's and PostgreSQL's CPU ms per payout in (a).
A_RATE_TARGET = 660.0
A_P99_TARGET_MS = 80.0
B_RATE_TARGET = 330.0
C_SHARE_TARGET = 0.5
SERVE_CPU_TARGET_MS = 1.0
POSTGRES_CPU_TARGET_MS = 1.2
MEGABYTE = 1024 * 1024


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
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="after (a) on the fresh database, store N payouts of the past in bulk, then run everything",
    )
    parser.add_argument("--read-in-flight", type=int, default=2, help="calls in flight in the reads")
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
        grown = _preloaded(bench, stack, args) if args.preload else None
        rows, reads = _scenarios(bench, stack, args, grown)
        security = _security(bench, stack, args)
        sweep = _sweep(bench, args)
        soak = _soak(bench, args)
        _limits(stack, rows[1], args)
        problems = (grown.problems if grown else []) + _books(
            stack, topic, grown.preloaded if grown else None
        )
        print(f"chart: {chart.draw(sweep, args.chart, workers=args.workers, shops=SHOPS)}")
    fresh = [grown.fresh] if grown else []
    failed = _errors([*fresh, *rows, *reads, *security, *sweep, soak])
    return 1 if failed or problems else 0


@dataclass(frozen=True)
class _Grown:
    """(a) on the fresh database, then the preload, and what its check found."""

    fresh: Row
    preloaded: Preloaded
    problems: list[str]


def _preloaded(bench: Bench, stack: Running, args: argparse.Namespace) -> _Grown:
    n, seconds = args.in_flight, args.seconds
    print(f"\nfresh database: (a) before the preload, {n} calls in flight, {seconds:g} s")
    print(report.table_header())
    _printed(
        "warm-up (a), not measured",
        lambda name: create_over_shops(bench, name, in_flight=n, seconds=args.warmup),
    )
    fresh = _printed(
        f"(a) create, {SHOPS} shops, fresh",
        lambda name: create_over_shops(bench, name, in_flight=n, seconds=seconds),
    )
    _print_plans(stack, datetime.now(UTC))
    _progress(f"preloading {args.preload} payouts")
    shops = [(shop.party_id, shop.shop_id) for shop in stack.shops]
    done = preload.preload(stack.database_url, stack.party_config, shops, args.preload)
    bench.meter.history = done.events
    _progress("checking the preloaded payouts")
    problems = preload.check_sample(stack.database_url, stack.party_config, done)
    print("\n".join(_preload_lines(done, problems)))
    return _Grown(fresh, done, problems)


def _preload_lines(done: Preloaded, problems: list[str]) -> list[str]:
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(done.statuses.items()))
    sizes = ", ".join(f"{table} {size / MEGABYTE:.0f}" for table, size in done.sizes.items())
    steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in done.steps.items())
    first, last = done.events
    lines = [
        f"\npreload: {done.payouts} payouts in {done.load_seconds:.1f} s"
        f" ({done.payouts / done.load_seconds:.0f} payouts/s),"
        f" then VACUUM ANALYZE {done.vacuum_seconds:.1f} s, CHECKPOINT {done.checkpoint_seconds:.1f} s",
        f"  in SQL, not through the API; created {done.start:%Y-%m-%d %H:%M} to {done.end:%Y-%m-%d %H:%M} UTC"
        f" ({preload.PERIOD.days} days up to the run's first payout), over {SHOPS} shops",
        f"  statuses: {statuses}",
        f"  history, not published: ids '{preload.PREFIX}...', {done.event_count} events"
        f" (rows {first}..{last}), none in the outbox, left out of the topic audit",
        f"  seconds per step: {steps}",
        f"  table sizes, MB with indexes: {sizes}; total {sum(done.sizes.values()) / MEGABYTE:.0f}",
    ]
    if problems:
        lines.append(f"  read back: {len(problems)} PROBLEMS")
        lines += [f"    {problem}" for problem in problems]
    else:
        lines.append(
            f"  read back: OK: {preload.SAMPLE} payouts replayed through the model, every event as the"
            " codec makes it; every slot's history ends at its balance; no settlement account overdrawn"
        )
    return lines


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
        "reads in flight": str(args.read_in_flight),
        "preload": f"{args.preload} payouts" if args.preload else "none",
    }


def _scenarios(
    bench: Bench, stack: Running, args: argparse.Namespace, grown: _Grown | None
) -> tuple[list[Row], list[Row]]:
    """The scenarios, warm-up and (a) first; and the reads."""
    n, seconds = args.in_flight, args.seconds
    where = f"the database grown by {args.preload} payouts" if grown else "the database the run made"
    print(
        f"\nscenarios on {where}: {n} calls in flight"
        f" ({args.read_in_flight} in the reads), {seconds:g} s each"
    )
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
    ]
    # A moment inside the preloaded period, else one in the run so far.
    if grown is not None:
        at = grown.preloaded.start + (grown.preloaded.end - grown.preloaded.start) / 2
    else:
        at = datetime.now(UTC)
    reads = [
        _printed(
            f"ListPayouts, 1 shop, {PAGE_SIZE}",
            lambda name: list_payouts(bench, name, in_flight=args.read_in_flight, seconds=seconds),
        ),
        _printed(
            "GetAccount at, fee account",
            lambda name: get_account_at(
                bench, name, stack.system_settlement(), at, in_flight=args.read_in_flight, seconds=seconds
            ),
        ),
    ]
    rows += [
        _printed(
            "(b) create then confirm",
            lambda name: create_then_confirm(bench, name, in_flight=n, seconds=seconds),
        ),
        _printed(
            "(c) create, one hot shop", lambda name: hot_shop(bench, name, in_flight=n, seconds=seconds)
        ),
    ]
    print(report.NOTES)
    _print_write_targets(*rows[1:])
    print(f"reads (GetAccount at {at:%Y-%m-%d %H:%M:%S} UTC):")
    for read, target in zip(reads, (LIST_P99_TARGET_MS, ACCOUNT_AT_P99_TARGET_MS), strict=True):
        p99 = read.calls[0].p99_ms
        print(f"  {read.name}: p99 {p99:.1f} ms, target <= {target:g} ms: {_verdict(p99 <= target)}")
    _print_plans(stack, at)
    if grown is not None:
        share = rows[1].rate / grown.fresh.rate
        print(
            f"  (a) on the grown database: {rows[1].rate:.1f} payouts/s; on the fresh one:"
            f" {grown.fresh.rate:.1f}; {share:.3f} of it, target >= {PRELOADED_SHARE_TARGET:g}:"
            f" {_verdict(share >= PRELOADED_SHARE_TARGET)}"
        )
    return rows, reads


def _print_write_targets(a: Row, b: Row, c: Row) -> None:
    serve, postgres = a.cpu_per_thousand("serve"), a.cpu_per_thousand("PostgreSQL")
    p99 = a.calls[0].p99_ms
    checks = [
        (f"(a) {a.rate:.1f} payouts/s", f">= {A_RATE_TARGET:g}", a.rate >= A_RATE_TARGET),
        (f"(a) p99 {p99:.1f} ms", f"<= {A_P99_TARGET_MS:g} ms", p99 <= A_P99_TARGET_MS),
        (f"(b) {b.rate:.1f} payouts/s", f">= {B_RATE_TARGET:g}", b.rate >= B_RATE_TARGET),
        (f"(c) / (a) {c.rate / a.rate:.3f}", f">= {C_SHARE_TARGET:g}", c.rate / a.rate >= C_SHARE_TARGET),
        (
            f"serve CPU {serve:.2f} ms per payout in (a)",
            f"<= {SERVE_CPU_TARGET_MS:g}",
            serve <= SERVE_CPU_TARGET_MS,
        ),
        (
            f"PostgreSQL CPU {postgres:.2f} ms per payout in (a)",
            f"<= {POSTGRES_CPU_TARGET_MS:g}",
            postgres <= POSTGRES_CPU_TARGET_MS,
        ),
    ]
    print("targets:")
    for figure, target, met in checks:
        print(f"  {figure}, target {target}: {_verdict(met)}")


def _print_plans(stack: Running, at: datetime) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the reads' SQL: one shop's first page, the fee account at `at`."""
    _progress("the reads' plans")
    party_id, shop_id = stack.shops[0].party_id, stack.shops[0].shop_id
    account_id = stack.system_settlement()
    found = plans.read_plans(stack.database_url, party_id, shop_id, PAGE_SIZE, account_id, at)
    what = {
        "ListPayouts": f"{party_id}/{shop_id}, the first page",
        "GetAccount at": f"account {account_id} at {at:%Y-%m-%d %H:%M:%S} UTC",
    }
    for query, plan in found.items():
        print(f"  {query}'s SQL ({what[query]}), EXPLAIN (ANALYZE, BUFFERS):")
        print("\n".join(f"    {line}" for line in plan))


def _verdict(reached: bool) -> str:
    return "reached" if reached else "NOT REACHED"


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


def _books(stack: Running, topic: TopicReader | None, preloaded: Preloaded | None) -> list[str]:
    _progress("checking the books and the topic")
    problems = audit_books(stack.database_url)
    checked = "the ledger and every payout's plans and events"
    if preloaded is not None:
        checked += f" (the {preloaded.payouts} preloaded too)"
    if topic is None:
        checked += " (no Kafka: the topic is not checked)"
    else:
        history = preloaded.events if preloaded else NO_HISTORY
        stored = stored_events(stack.database_url, history)
        problems += topic_problems(stored, topic.deliveries())
        checked += f", and the topic: {len(stored)} events, each published once, in order"
        if preloaded is not None:
            checked += f" (the {preloaded.event_count} preloaded events are history: not published)"
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
