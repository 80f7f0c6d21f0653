"""CPU time and memory of the processes under test, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
MEGABYTE = 1024 * 1024


def children(pid: int) -> list[int]:
    """The live children of `pid`."""
    found: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended
    return found


def workers(serve_pid: int) -> list[int]:
    """The worker processes of `serve --workers N`: its spawned children (not the resource tracker)."""
    return sorted(pid for pid in children(serve_pid) if b"spawn_main" in _cmdline(pid))


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU of `pid` and of every descendant, live or ended (and waited for)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Split after the command, which may hold spaces: field n of stat(5) is at index n - 3.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    own_and_waited = (utime + stime + cutime + cstime) / CLOCK_TICKS
    return own_and_waited + sum(tree_cpu_seconds(child) for child in children(pid))


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent on anything but idling, since boot."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The most memory `pid` ever had resident (VmHWM)."""
    return _status_kb(pid, "VmHWM") * 1024 / MEGABYTE


def rss_mb(pid: int) -> float:
    """The memory `pid` has resident now (VmRSS)."""
    return _status_kb(pid, "VmRSS") * 1024 / MEGABYTE


def _status_kb(pid: int, field: str) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise LookupError(f"no {field} for process {pid}")


def _cmdline(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return b""
