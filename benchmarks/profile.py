"""A py-spy flame graph of one serve worker while it is under load: where its Python time goes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def py_spy() -> str | None:
    """py-spy from this venv (the dev extra pins it), else from the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profile:
    """Records `pid` for `seconds` into an SVG flame graph; only samples holding the GIL (CPU)."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        self.output = output
        self._process: subprocess.Popen[bytes] | None = None
        command = py_spy()
        if command is None:
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                command,
                "record",
                f"--pid={pid}",
                f"--duration={max(1, round(seconds))}",
                "--rate=100",
                "--gil",
                "--nonblocking",
                "--format=flamegraph",
                f"--output={output}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self) -> str:
        """Waits for the recording; says where it went, or why there is none."""
        if self._process is None:
            return "no profile: py-spy is not installed"
        _, error = self._process.communicate(timeout=60)
        if self._process.returncode != 0:
            return f"no profile: py-spy failed: {error.decode(errors='replace').strip()[-300:]}"
        return str(self.output)
