"""The chart of throughput and p99 latency against calls in flight, from the sweep."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

from matplotlib import pyplot

from benchmarks.measure import Row
from benchmarks.report import machine


def draw(rows: Sequence[Row], path: Path, *, workers: int, shops: int) -> Path:
    """Saves a PNG: payouts/s (left axis) and p99 in ms (right axis) per calls in flight."""
    in_flight = [row.in_flight for row in rows]
    figure, throughput = pyplot.subplots(figsize=(9, 5.5))
    throughput.plot(in_flight, [row.rate for row in rows], "o-", color="tab:blue", label="payouts/s")
    throughput.set_xscale("log", base=2)
    throughput.set_xticks(in_flight, [str(n) for n in in_flight])
    throughput.set_xlabel("calls in flight")
    throughput.set_ylabel("payouts per second", color="tab:blue")
    throughput.set_ylim(bottom=0)
    latency = throughput.twinx()
    latency.plot(in_flight, [row.calls[-1].p99_ms for row in rows], "s--", color="tab:red", label="p99")
    latency.set_ylabel("p99 latency, ms", color="tab:red")
    latency.set_ylim(bottom=0)
    throughput.grid(alpha=0.3)
    throughput.set_title(
        f"CreatePayout over 1000 shops, serve --workers {workers}\n{machine()}, {datetime.now(UTC):%Y-%m-%d}",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
