"""One measured window of load: payouts, latencies, CPU per process, memory, delivery delay."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks import processes
from benchmarks.ghz import Calls
from benchmarks.stack import Running
from benchmarks.topic import NO_HISTORY, EventRows, TopicReader, delays_ms, published_count

MACHINE = "machine"
# How long the relay may take to publish what a window created before the run gives up on it.
DRAIN_TIMEOUT = 120.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    name: str
    payouts: int
    seconds: float
    calls: list[Calls]
    # CPU seconds over the window (load and the relay's drain), per process group.
    cpu: dict[str, float]
    peak_rss_mb: list[float]
    # created_at to the consumer, in ms: p50 and p99; None without Kafka.
    delay_ms: tuple[float, float] | None
    in_flight: int

    @property
    def rate(self) -> float:
        return self.payouts / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for calls in self.calls:
            for code, n in calls.errors.items():
                total[code] = total.get(code, 0) + n
        return total

    def cpu_per_thousand(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / self.payouts * 1000 if self.payouts else float("nan")


class Meter:
    """Reads the stack's processes: serve (with its workers), PartyManagement and PostgreSQL."""

    def __init__(self, stack: Running, topic: TopicReader | None) -> None:
        self.stack = stack
        self.topic = topic
        # Events stored as history (preloaded): never published, so never waited for.
        self.history: EventRows = NO_HISTORY
        postmaster = (stack.postgres.data_dir / "postmaster.pid").read_text().split()[0]
        # Both serve processes, when the stack has a secured one: the idle one costs nothing.
        serves = [stack.serve.pid] + ([stack.secured.serve.pid] if stack.secured else [])
        self._groups = {
            "serve": serves,
            "PartyManagement": [stack.party_management.pid],
            "PostgreSQL": [int(postmaster)],
        }

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each group, and of the whole machine ("machine")."""
        used = {
            name: sum(processes.tree_cpu_seconds(pid) for pid in pids) for name, pids in self._groups.items()
        }
        return used | {MACHINE: processes.machine_busy_seconds()}

    def workers(self) -> list[int]:
        return processes.workers(self.stack.serve.pid)

    def drain(self) -> None:
        """Waits until the topic has every event stored so far, but the history (preloaded) ones."""
        if self.topic is None:
            return
        stored = published_count(self.stack.database_url, self.history)
        if not self.topic.wait_for(stored, DRAIN_TIMEOUT):
            raise TimeoutError(f"the topic did not get all {stored} stored events within {DRAIN_TIMEOUT} s")

    def measure(
        self,
        name: str,
        in_flight: int,
        load: Callable[[], list[Calls]],
        payouts: Callable[[list[Calls]], int],
    ) -> Row:
        """Runs `load` and measures it; `payouts` says how many payouts its calls made."""
        before = self.cpu()
        started = time.time()
        calls = load()
        ended = time.time()
        self.drain()
        after = self.cpu()
        cpu = {group: after[group] - before[group] for group in after}
        cpu["ghz"] = sum(c.cpu_seconds for c in calls)
        # Kafka, this process, and whatever else the machine was doing.
        cpu["other"] = cpu.pop(MACHINE) - sum(cpu.values())
        return Row(
            name=name,
            payouts=payouts(calls),
            seconds=sum(c.seconds for c in calls),
            calls=calls,
            cpu=cpu,
            peak_rss_mb=[processes.peak_rss_mb(pid) for pid in self.workers()],
            delay_ms=self._delay(started, ended),
            in_flight=in_flight,
        )

    def _delay(self, since: float, until: float) -> tuple[float, float] | None:
        if self.topic is None:
            return None
        delays = delays_ms(self.topic.deliveries(), since, until)
        return (percentile(delays, 0.5), percentile(delays, 0.99)) if delays else None


@dataclass
class RssSamples:
    """Each worker's resident memory, sampled on a thread while a long load runs."""

    pids: list[int]
    interval: float
    # (seconds since start, MB per worker in `pids` order)
    samples: list[tuple[float, list[float]]] = field(default_factory=list)

    def during(self, load: Callable[[], list[Calls]]) -> Callable[[], list[Calls]]:
        """`load`, sampling all the while it runs."""

        def sampled() -> list[Calls]:
            stop = threading.Event()
            sampler = threading.Thread(target=self._sample, args=(stop,), daemon=True)
            sampler.start()
            try:
                return load()
            finally:
                stop.set()
                sampler.join()

        return sampled

    def growth_mb(self) -> list[float]:
        """Per worker: mean of the last fifth of the run minus mean of its second fifth.

        Over 5 minutes: the last minute against the second (the first is warm-up).
        """
        if not self.samples:
            return [float("nan")] * len(self.pids)
        fifth = self.samples[-1][0] / 5
        second = [mb for at, mb in self.samples if fifth <= at < 2 * fifth] or [self.samples[0][1]]
        last = [mb for at, mb in self.samples if at >= 4 * fifth]
        return [
            statistics.fmean(m[n] for m in last) - statistics.fmean(m[n] for m in second)
            for n in range(len(self.pids))
        ]

    def peak_mb(self) -> list[float]:
        return [max(mb[n] for _, mb in self.samples) for n in range(len(self.pids))] if self.samples else []

    def _sample(self, stop: threading.Event) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - start, [processes.rss_mb(pid) for pid in self.pids]))
            if stop.wait(self.interval):
                return
