"""The benchmark harness, `python -m benchmarks --quick`: the whole run, a few seconds of each part,
on a database grown by a small preload (2000 payouts stored in bulk).

It starts its own stack (durable PostgreSQL, Kafka when a JDK is present, PartyManagement, serve),
so this test needs nothing from the other fixtures; only ghz, which `make tools` installs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.tools import ensure_tool

from local_stack.kafka import java_available

ROOT = Path(__file__).resolve().parents[2]
# Where `make tools` puts ghz, and where the benchmark looks first.
LOCAL_GHZ = ROOT / ".tools" / "bin" / "ghz"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER = r"\d+\.\d+"
# payouts/s, then p50 and p99 (create/confirm for (b)), five CPU figures, RSS per worker.
ROW = rf"\s+(?P<rate>{NUMBER})\s+(?P<p50>[\d./]+)\s+(?P<p99>[\d./]+)(\s+-?{NUMBER}){{5}}\s+[\d/]+"
SCENARIOS = (
    "(a) create, 1000 shops, fresh",
    "(a) create, 1000 shops",
    "ListPayouts, 1 shop, 100",
    "GetAccount at, fee account",
    "(b) create then confirm",
    "(c) create, one hot shop",
)


@pytest.fixture(scope="module")
def ghz() -> None:
    """ghz, installed by the Makefile's own pinned `go install` when it is missing."""
    if not shutil.which("ghz"):
        ensure_tool(LOCAL_GHZ.name)


@pytest.mark.usefixtures("ghz")
@pytest.mark.timeout(400)
def test_quick_benchmark_prints_every_row_the_limits_and_healthy_books(tmp_path: Path) -> None:
    chart = tmp_path / "throughput.png"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--chart", str(chart)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout
    assert run.returncode == 0, f"{output}\n{run.stderr}"

    assert re.search(r"^machine: .*CPUs", output, re.MULTILINE)
    assert "fsync=on, synchronous_commit=on" in output
    # The preload: stored, its events history (not published), its tables' sizes, read back.
    assert re.search(
        r"^preload: 2000 payouts in \d+\.\d s .*, then VACUUM ANALYZE .*, CHECKPOINT", output, re.MULTILINE
    )
    assert re.search(
        r"^  history, not published: ids 'preload-\.\.\.', \d+ events .* none in the outbox",
        output,
        re.MULTILINE,
    )
    assert re.search(
        r"^  table sizes, MB with indexes: .*payout_event \d+.*; total \d+$", output, re.MULTILINE
    )
    assert "  read back: OK: 50 payouts replayed through the model" in output
    for scenario in SCENARIOS:
        row = re.search(rf"^{re.escape(scenario)}{ROW}", output, re.MULTILINE)
        assert row, f"no row of numbers for {scenario}:\n{output}"
        assert float(row["rate"]) > 0
    # The write path's targets, each with its figure and a verdict.
    for figure, bound in (
        (rf"\(a\) {NUMBER} payouts/s", ">= 660"),
        (rf"\(a\) p99 {NUMBER} ms", "<= 80 ms"),
        (rf"\(b\) {NUMBER} payouts/s", ">= 330"),
        (rf"\(c\) / \(a\) {NUMBER}", ">= 0.5"),
        (rf"serve CPU {NUMBER} ms per payout in \(a\)", "<= 1"),
        (rf"PostgreSQL CPU {NUMBER} ms per payout in \(a\)", "<= 1.2"),
    ):
        assert re.search(
            rf"^  {figure}, target {re.escape(bound)}: (reached|NOT REACHED)$", output, re.MULTILINE
        ), output
    for read, target in (("ListPayouts, 1 shop, 100", 20), ("GetAccount at, fee account", 10)):
        assert re.search(
            rf"^  {re.escape(read)}: p99 {NUMBER} ms, target <= {target} ms: (reached|NOT REACHED)$",
            output,
            re.MULTILINE,
        ), output
    for query in ("ListPayouts", "GetAccount at"):
        # On the fresh database and on the grown one.
        assert (
            len(re.findall(rf"^  {query}'s SQL .*, EXPLAIN \(ANALYZE, BUFFERS\):$", output, re.MULTILINE))
            == 2
        )
    grown = re.search(
        rf"^  \(a\) on the grown database: ({NUMBER}) payouts/s; on the fresh one: ({NUMBER});",
        output,
        re.MULTILINE,
    )
    assert grown and float(grown[1]) > 0 and float(grown[2]) > 0, output
    assert re.search(rf"^\(b\) create then confirm\s+{NUMBER}\s+{NUMBER}/{NUMBER}\s", output, re.MULTILINE)
    for kind in ("plaintext, no policy", "mutual TLS + policy"):
        for turn in (1, 2):
            row = re.search(rf"^\(a\) {re.escape(kind)} {turn}{ROW}", output, re.MULTILINE)
            assert row and float(row["rate"]) > 0, f"no row for (a) {kind} {turn}:\n{output}"
    security = re.search(
        rf"mutual TLS \+ policy: ({NUMBER}) payouts/s; plaintext: ({NUMBER}); ({NUMBER}) of it", output
    )
    assert security and float(security[3]) > 0, output
    for in_flight in (1, 8, 32):
        assert re.search(rf"^\(a\) {in_flight} in flight{ROW}", output, re.MULTILINE)
    if java_available():
        assert re.search(rf"^\(a\) create, 1000 shops.*\s{NUMBER}\s+{NUMBER}\s+0$", output, re.MULTILINE)

    ratios = re.findall(
        rf"(?:with the shared fee account|without it)\s+{NUMBER} tx/s;.* is ({NUMBER}) of it", output
    )
    assert len(ratios) == 2 and all(float(ratio) > 0 for ratio in ratios), output
    assert re.search(r"^worker 1: peak RSS \d+ MB, growth [-+]\d+\.\d MB", output, re.MULTILINE)
    books = re.search(r"^books: OK: .*\(the 2000 preloaded too\)(?P<topic>.*)$", output, re.MULTILINE)
    assert books, output
    if java_available():
        assert re.search(
            r"the topic: \d+ events, each published once, in order \(the \d+ preloaded", books["topic"]
        ), output
    assert "ERRORS" not in output
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
