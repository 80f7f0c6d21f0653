"""Load over real gRPC with ghz (pinned in the Makefile, installed into .tools/bin by `make tools`).

ghz's reflection client does not find the service, so it gets a protoset built from the generated
Python descriptors. A run with a duration stops starting calls when the time is up and waits for
the calls in flight (`--duration-stop wait`): every call is counted, none is cancelled by ghz.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from payout_manager.proto.accounter.v1 import accounter_pb2
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2

SERVICE = "payout_manager.v1.PayoutManagement"
ACCOUNTER = "accounter.v1.Accounter"
LOCAL_GHZ = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "ghz"
NANOSECONDS = 1e9


class GhzMissingError(RuntimeError):
    """ghz is neither in .tools/bin nor on the PATH."""


def ghz_binary() -> Path:
    """ghz from .tools/bin (what `make tools` installs), else from the PATH."""
    if LOCAL_GHZ.exists():
        return LOCAL_GHZ
    found = shutil.which("ghz")
    if found is None:
        raise GhzMissingError(f"ghz is missing: run `make tools` (it installs ghz into {LOCAL_GHZ.parent})")
    return Path(found)


def ghz_version() -> str:
    """The module version Go recorded in the binary (`go install` builds say "dev" to --version)."""
    binary = ghz_binary()
    if shutil.which("go"):
        info = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True, check=False)
        for line in info.stdout.splitlines():
            fields = line.split()
            if fields[:2] == ["mod", "github.com/bojand/ghz"]:
                return fields[2]
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return result.stdout.strip() or result.stderr.strip()


def write_protoset(path: Path) -> Path:
    """Writes the services' files and every file they import as one FileDescriptorSet."""
    files: dict[str, FileDescriptor] = {}

    def add(file: FileDescriptor) -> None:
        if file.name in files:
            return
        for dependency in file.dependencies:
            add(dependency)
        files[file.name] = file

    add(payout_manager_pb2.DESCRIPTOR)
    add(accounter_pb2.DESCRIPTOR)
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for file in files.values():  # dependencies first, as protoc writes them
        file.CopyToProto(descriptor_set.file.add())
    path.write_bytes(descriptor_set.SerializeToString())
    return path


@dataclass(frozen=True)
class Calls:
    """What one ghz run did: every call counted, latencies of the OK ones."""

    method: str
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    # Status code name -> count, for every code but OK.
    errors: dict[str, int]
    # ghz's own CPU: it shares the machine with the server.
    cpu_seconds: float

    @property
    def ok(self) -> int:
        return self.count - sum(self.errors.values())


@dataclass(frozen=True)
class Target:
    address: str
    protoset: Path
    workers: int
    # Mutual TLS: the CA to trust, and the client certificate and key to show; None: plaintext.
    tls: tuple[Path, Path, Path] | None = None

    def transport(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        ca, cert, key = self.tls
        return ["--cacert", str(ca), "--cert", str(cert), "--key", str(key)]


def run(
    target: Target,
    method: str,
    data: dict[str, Any],
    *,
    in_flight: int,
    seconds: float | None = None,
    total: int | None = None,
    service: str = SERVICE,
) -> Calls:
    """Calls `service`'s `method` with `in_flight` calls at a time, for `seconds` or `total` calls.

    `data` is the request as JSON; its strings may use ghz's templates ({{.RequestNumber}}).
    """
    if (seconds is None) == (total is None):
        raise ValueError("give either seconds or total")
    limit = ["-z", f"{seconds}s", "--duration-stop", "wait"] if seconds is not None else ["-n", str(total)]
    command = [
        str(ghz_binary()),
        *target.transport(),
        "--protoset",
        str(target.protoset),
        "--call",
        f"{service}/{method}",
        "-d",
        json.dumps(data),
        "-c",
        str(in_flight),
        # Several connections, so that SO_REUSEPORT spreads the calls over the workers.
        "--connections",
        str(min(in_flight, 4 * target.workers)),
        "--timeout",
        "30s",
        "--format",
        "json",
        *limit,
        target.address,
    ]
    before = _children_cpu_seconds()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"ghz failed ({result.returncode}): {result.stderr.strip()}")
    return _calls(method, json.loads(result.stdout), _children_cpu_seconds() - before)


def _calls(method: str, report: dict[str, Any], cpu_seconds: float) -> Calls:
    latencies = {
        entry["percentage"]: entry["latency"] / NANOSECONDS * 1000
        for entry in report.get("latencyDistribution") or []
    }
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    return Calls(
        method=method,
        count=int(report["count"]),
        seconds=report["total"] / NANOSECONDS,
        p50_ms=latencies.get(50, float("nan")),
        p99_ms=latencies.get(99, float("nan")),
        errors={code: n for code, n in codes.items() if code != "OK"},
        cpu_seconds=cpu_seconds,
    )


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
