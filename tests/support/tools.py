"""The pinned Go tools in .tools/bin (grpcurl, ghz, buf), installed by the Makefile when missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"


def ensure_tool(name: str) -> Path:
    """.tools/bin/<name>, from the Makefile's pinned `go install` if it is not there yet.

    Skips the test, saying why, only when neither the tool nor go and make to install it are here.
    """
    tool = TOOLS / name
    if tool.exists():
        return tool
    missing = [program for program in ("go", "make") if shutil.which(program) is None]
    if missing:
        pytest.skip(f"{name} is not in {TOOLS}, and {' and '.join(missing)} to install it is not here")
    subprocess.run(["make", "-C", str(ROOT), str(tool)], check=True, timeout=600)
    return tool
