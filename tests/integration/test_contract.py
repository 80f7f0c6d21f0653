"""The contract's guard bites: `buf breaking` refuses what would break callers and event consumers."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.tools import ensure_tool

ROOT = Path(__file__).resolve().parents[2]
PAYOUT_MANAGER = "proto/payout_manager/v1/payout_manager.proto"
PARTY_MANAGEMENT = "proto/party_management/v1/party_management.proto"


def contract_copy(directory: Path) -> Path:
    """proto/ and buf.yaml, copied into `directory`."""
    shutil.copytree(ROOT / "proto", directory / "proto")
    shutil.copy(ROOT / "buf.yaml", directory / "buf.yaml")
    return directory


def edit(copy: Path, relative: str, pattern: str, replacement: str) -> None:
    path = copy / relative
    text, count = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} is not in {relative}"
    path.write_text(text)


def breaking(changed: Path, released: Path) -> subprocess.CompletedProcess[str]:
    buf = ensure_tool("buf")
    return subprocess.run(
        [str(buf), "breaking", str(changed), "--against", str(released)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def released(tmp_path: Path) -> Path:
    return contract_copy(tmp_path / "released")


def test_an_unchanged_contract_passes_the_guard(released: Path, tmp_path: Path) -> None:
    result = breaking(contract_copy(tmp_path / "changed"), released)

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renumbered_field_fails_the_guard(released: Path, tmp_path: Path) -> None:
    changed = contract_copy(tmp_path / "changed")
    # Cash.amount moves from field 1 to field 9: every stored event would decode without its money.
    edit(changed, PARTY_MANAGEMENT, r"(message Cash \{[^}]*?int64 amount = )1;", r"\g<1>9;")

    result = breaking(changed, released)

    assert result.returncode != 0
    assert "Cash" in result.stdout, result.stdout + result.stderr


def test_a_removed_enum_value_fails_the_guard(released: Path, tmp_path: Path) -> None:
    changed = contract_copy(tmp_path / "changed")
    edit(changed, PAYOUT_MANAGER, r"^\s*PAYOUT_STATUS_CANCELLED = \d+;\n", "")

    result = breaking(changed, released)

    assert result.returncode != 0
    assert "PAYOUT_STATUS_CANCELLED" in result.stdout, result.stdout + result.stderr
