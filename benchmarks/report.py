"""The printed report: the machine and settings first, then one table row per measured window."""

from __future__ import annotations

import itertools
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from benchmarks.measure import Row

GIGABYTE_KB = 1024 * 1024
# (group, title, width) of each column; the first is left-aligned, a group spans its neighbours.
COLUMNS = (
    ("", "scenario", 28),
    ("", "payouts/s", 10),
    ("latency ms", "p50", 12),
    ("latency ms", "p99", 12),
    ("CPU s per 1000 payouts", "serve", 8),
    ("CPU s per 1000 payouts", "PartyMgmt", 10),
    ("CPU s per 1000 payouts", "Postgres", 9),
    ("CPU s per 1000 payouts", "ghz", 6),
    ("CPU s per 1000 payouts", "other", 7),
    ("peak RSS", "MB/worker", 11),
    ("delivery ms", "p50", 8),
    ("delivery ms", "p99", 8),
    ("", "errors", 8),
)
NOTES = """\
p50, p99: latency of each call as ghz saw it; for create-then-confirm, create/confirm.
CPU: utime+stime from /proc over the load and the relay's publishing of what it created; serve is the
serve process (which runs the relay) and its workers; PostgreSQL, every backend; ghz, the load generator;
other, the rest of the machine's busy time (Kafka, this harness, and anything else running: a large
figure means the machine was not left to the benchmark).
peak RSS: VmHWM of each worker, since it started.
delivery: from the event's created_at to a consumer in a group of its own. created_at is stamped in
the transaction before it commits, so this is an upper bound of the delay from commit to delivery."""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """Like `2 CPUs (Intel(R) Xeon(R) Processor), 23.5 GB RAM`."""
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gb = int(meminfo[meminfo.index("MemTotal:") + 1]) / GIGABYTE_KB
    return f"{os.cpu_count()} CPUs ({cpu_model()}), {ram_gb:.1f} GB RAM"


def postgres_settings(database_url: str) -> dict[str, str]:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            cursor.execute(f"SHOW {name}")
            (settings[name],) = cursor.fetchone() or ("?",)
        return settings


def header(database_url: str, versions: dict[str, str], settings: dict[str, str]) -> list[str]:
    postgres = postgres_settings(database_url)
    durability = f"fsync={postgres['fsync']}, synchronous_commit={postgres['synchronous_commit']}"
    return [
        "payout-manager benchmark",
        f"machine:    {machine()}, {platform.system()} {platform.release()}",
        f"date:       {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "versions:   "
        + ", ".join(
            [
                f"PostgreSQL {postgres['server_version']}",
                *(f"{name} {version}" for name, version in versions.items()),
                f"Python {platform.python_version()}",
            ]
        ),
        "settings:   " + ", ".join(f"{name} {value}" for name, value in settings.items()),
        f"durability: {durability}, shared_buffers {postgres['shared_buffers']}",
    ]


def table_header() -> str:
    groups = [
        (group, sum(width for _, _, width in columns))
        for group, columns in itertools.groupby(COLUMNS, key=lambda column: column[0])
    ]
    spans = "".join(f" {group:-^{width - 1}}" if group else " " * width for group, width in groups)
    return f"{spans}\n{_line([title for _, title, _ in COLUMNS])}"


def table_row(row: Row) -> str:
    rss = "/".join(f"{mb:.0f}" for mb in row.peak_rss_mb)
    delay = row.delay_ms or (float("nan"), float("nan"))
    return _line(
        [
            row.name,
            f"{row.rate:.1f}",
            "/".join(f"{c.p50_ms:.1f}" for c in row.calls),
            "/".join(f"{c.p99_ms:.1f}" for c in row.calls),
            *(
                f"{row.cpu_per_thousand(group):.2f}"
                for group in ("serve", "PartyManagement", "PostgreSQL", "ghz", "other")
            ),
            rss,
            f"{delay[0]:.1f}" if row.delay_ms else "n/a",
            f"{delay[1]:.1f}" if row.delay_ms else "n/a",
            str(sum(row.errors.values())),
        ]
    )


def _line(cells: Sequence[str]) -> str:
    (_, _, first_width), *rest = COLUMNS
    return cells[0].ljust(first_width) + "".join(
        cell.rjust(width) for cell, (_, _, width) in zip(cells[1:], rest, strict=True)
    )
