"""The shipped service stands alone: nothing in it imports the development machinery."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("payout_manager", "clients")
# The quick start's local stack, the tests and the benchmark: in the repository, not in the wheel.
DEVELOPMENT = ("local_stack", "payout_manager_testing", "support", "tests", "benchmarks", "scripts")


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def shipped_sources() -> list[Path]:
    """Every module the wheel carries (the migrations through payout_manager/migrations)."""
    return sorted(path for package in SHIPPED for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", shipped_sources(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_shipped_module_imports_the_development_machinery(path: Path) -> None:
    development = [name for name in imported_modules(path) if name.split(".")[0] in DEVELOPMENT]

    assert not development, f"{path.relative_to(ROOT)} imports {development}"
