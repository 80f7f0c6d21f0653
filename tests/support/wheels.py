"""The project's two distributions built as wheels from a copy of the tree, and venvs that hold them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = (".git", ".venv", ".tools", ".demo", "build", "dist", "*.egg-info", "__pycache__", "*_cache")
INSTALL_TIMEOUT = 600


def build_wheels(work: Path) -> Path:
    """The service's wheel and the testing kit's (testing/), built from a copy of this tree into a
    directory of `work`, which is returned."""
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SHIPPED))
    dist = work / "dist"
    for project in (source, source / "testing"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(dist),
                str(project),
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
    return dist


def venv_with(venv: Path, dist: Path, requirement: str) -> Path:
    """A new venv at `venv` with `requirement` installed, this project's distributions taken from
    `dist` and everything else from the package index; returns the venv."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--find-links", str(dist), requirement],
        check=True,
        timeout=INSTALL_TIMEOUT,
    )
    return venv
