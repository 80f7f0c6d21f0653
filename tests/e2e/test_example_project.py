"""The example downstream project (examples/back-office-integration) as its team meets the kit.

Both wheels (the service's and the testing kit's) are built from this tree and installed, with
`payout-manager[testing]` and nothing else of the repository, into a venv of the example's own;
the example's tests then run there with pytest, on PostgreSQL and Kafka the kit chooses itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.wheels import ROOT, build_wheels, venv_with

EXAMPLE = ROOT / "examples" / "back-office-integration"

# Building two wheels and installing their dependencies into a new venv takes minutes.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch directory outside pytest's basetemp, which is mode 0700: the venv holds the
    embedded PostgreSQL, whose server runs as an account of its own when the tests run as root."""
    directory = Path(tempfile.mkdtemp(prefix="pm-example-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_example_project_passes_on_the_built_wheels(work: Path) -> None:
    venv = venv_with(work / "venv", build_wheels(work), "payout-manager[testing]")
    project = work / "example"
    shutil.copytree(EXAMPLE, project)
    # Nothing of this repository's environment: no PYTHONPATH, no other venv, no test settings
    # (the kit picks PostgreSQL and Kafka itself); the machine's programs (java, mvn) stay.
    kept = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PM_")
    }
    env = {**kept, "PATH": f"{venv / 'bin'}:{kept.get('PATH', '/usr/bin:/bin')}"}

    run = subprocess.run(
        [str(venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout
