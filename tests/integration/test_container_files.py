"""Dockerfile and docker-compose.yml, checked against the code they run (no Docker engine needed).

Both files are parsed, and every command, setting, port and path in them is checked against what
the CLI, the settings loader, the PartyManagement config loader and the migrations expect. The
image's two scripts (docker/healthcheck.py, docker/seed.py) run here against real servers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2_grpc

import payout_manager
from clients.party_management import config as party_config
from local_stack.kafka import KAFKA_VERSION
from payout_manager import cli, settings
from payout_manager.proto.accounter.v1 import accounter_pb2, accounter_pb2_grpc
from payout_manager.storage import migrations
from payout_manager_testing.postgres import DOCKER_IMAGE as POSTGRES_IMAGE
from payout_manager_testing.processes import Process, free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "payout-manager"
# Where the image's venv keeps its packages: /opt/venv with the Python of `FROM python:3.11-slim`.


# --- the Dockerfile, as (instruction, arguments) pairs per stage ---


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage(instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_stages()[-1] if name == instruction]


def image_env() -> dict[str, str]:
    pairs = [pair for arguments in final_stage("ENV") for pair in shlex.split(arguments)]
    return dict(pair.split("=", 1) for pair in pairs)


def image_copies() -> dict[str, PurePosixPath]:
    """Each file or folder of the repository the final stage copies in, and where it lands."""
    copies: dict[str, PurePosixPath] = {}
    for arguments in final_stage("COPY"):
        if arguments.startswith("--from="):
            continue
        *sources, destination = arguments.split()
        for source in sources:
            target = PurePosixPath(destination)
            copies[source] = target / Path(source).name if destination.endswith("/") else target
    return copies


def healthcheck_command() -> list[str]:
    (healthcheck,) = final_stage("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.partition(" CMD ")[2])
    return command


def port(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- docker-compose.yml, docker/'s scripts and the command line they run ---


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def script(name: str) -> ModuleType:
    """One of docker/'s scripts, imported from its file."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", ROOT / "docker" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def program_accepts(command: list[str]) -> argparse.Namespace:
    """The arguments `payout-manager` parses from `command`; an unknown command or flag fails the test."""
    return cli._parser().parse_args(command)


def test_the_image_is_built_in_two_slim_stages_and_runs_as_a_user_without_privileges() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert all(stage[0][1].split()[0] == "python:3.11-slim" for stage in stages)
    (user,) = final_stage("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert not [arguments for arguments in final_stage("RUN") if "pip install" in arguments], (
        "the project is installed in the build stage"
    )
    (install,) = [arguments for name, arguments in stages[0] if name == "RUN" and "pip install" in arguments]
    wheel = install.split()[-1]
    assert wheel.endswith(".whl") and "[" not in wheel, (
        "the wheel alone: neither dev nor the embedded PostgreSQL"
    )


def test_the_entry_point_is_the_project_script_and_the_default_command_is_serve() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = final_stage("ENTRYPOINT")
    assert json.loads(entrypoint) == [IMAGE]
    assert IMAGE in scripts
    (command,) = final_stage("CMD")
    assert json.loads(command) == ["serve"]
    program_accepts(json.loads(command))


def test_the_image_listens_on_the_port_it_exposes_on_every_interface() -> None:
    address = settings.load(image_env()).grpc_address
    assert address.rpartition(":")[0] == "0.0.0.0"
    assert final_stage("EXPOSE") == [str(port(address))]


def test_every_file_the_image_copies_exists_and_is_not_ignored() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept in (".git", ".venv", ".demo", ".tools"):
        assert kept in ignored
    build_sources = [arguments.split()[:-1] for name, arguments in dockerfile_stages()[0] if name == "COPY"]
    for source in [*image_copies(), *(source for sources in build_sources for source in sources)]:
        assert (ROOT / source).exists(), source
        assert source.split("/")[0] not in ignored, source


def test_the_wheel_is_built_with_the_migrations_the_package_links_to() -> None:
    build_sources = [arguments.split()[0] for name, arguments in dockerfile_stages()[0] if name == "COPY"]
    link = Path(payout_manager.__file__).parent / "migrations"
    assert link.is_symlink()
    assert (link.parent / os.readlink(link)).resolve() == (ROOT / "migrations").resolve()
    # The link resolves in the build stage, and nothing is copied beside the installed package.
    assert "migrations" in build_sources
    assert not [source for source in image_copies() if "migrations" in source]


def test_the_healthcheck_runs_the_copied_script_on_grpc_health() -> None:
    python, path = healthcheck_command()
    assert python == "python"
    assert image_copies()["docker/healthcheck.py"] == PurePosixPath(path)
    assert "grpc_health.v1" in (ROOT / "docker" / "healthcheck.py").read_text()


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{bound}", servicer
    server.stop(grace=None)


def test_the_healthcheck_passes_only_while_serving(
    health_server: tuple[str, health.HealthServicer], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, servicer = health_server
    healthcheck = script("healthcheck")
    # With no argument it asks 127.0.0.1 on PM_GRPC_ADDRESS's port, as in the image.
    monkeypatch.setenv("PM_GRPC_ADDRESS", f"0.0.0.0:{port(address)}")
    assert healthcheck.main([]) == 0
    servicer.enter_graceful_shutdown()
    assert healthcheck.main([]) == 1
    monkeypatch.setenv("PM_GRPC_ADDRESS", f"0.0.0.0:{free_port()}")
    assert healthcheck.main([]) == 1


def test_the_stack_has_its_services_and_the_official_images(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "kafka", "migrate", "party-management", "serve", "seed"}
    assert services["postgres"]["image"] == POSTGRES_IMAGE
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    for name in ("migrate", "party-management", "serve", "seed"):
        assert services[name]["image"] == IMAGE
        assert services[name]["build"] == "."


def test_every_command_is_one_the_program_accepts(services: dict[str, dict[str, Any]]) -> None:
    for name in ("migrate", "party-management", "serve"):
        assert "entrypoint" not in services[name]
        assert program_accepts(services[name]["command"]).command == name
    python, path = services["seed"]["entrypoint"]
    assert python == "python"
    assert image_copies()["docker/seed.py"] == PurePosixPath(path)
    script("seed").parser().parse_args(services["seed"]["command"])


def test_every_setting_is_one_the_program_reads_and_is_valid(services: dict[str, dict[str, Any]]) -> None:
    known = set(re.findall(r'"(PM_[A-Z_]+)"', (ROOT / "payout_manager" / "settings.py").read_text()))
    for name in ("migrate", "party-management", "serve", "seed"):
        environment = {key: str(value) for key, value in services[name]["environment"].items()}
        assert set(environment) <= known, name
        loaded = settings.load(environment)
        assert loaded.require_database_url()
        assert loaded.kafka_bootstrap_servers


def test_the_one_stack_fits_together(services: dict[str, dict[str, Any]]) -> None:
    serve = settings.load({**image_env(), **services["serve"]["environment"]})

    # serve: published on the port it listens on, the one the image exposes.
    assert services["serve"]["ports"] == [f"{port(serve.grpc_address)}:{port(serve.grpc_address)}"]
    assert final_stage("EXPOSE") == [str(port(serve.grpc_address))]

    # PostgreSQL: the database, user and password the postgres service creates.
    database = serve.require_database_url()
    postgres = services["postgres"]["environment"]
    assert (database.host, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.database == postgres["POSTGRES_DB"]

    # Kafka: what the broker advertises to the other containers, on a port it listens on.
    kafka = services["kafka"]["environment"]
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("://")[1]
    assert serve.kafka_bootstrap_servers == advertised
    assert advertised.split(":")[0] == "kafka"
    assert f"PLAINTEXT://:{port(advertised)}" in kafka["KAFKA_LISTENERS"].split(",")

    # PartyManagement: the reference server listens where serve calls it.
    party_management = program_accepts(services["party-management"]["command"])
    assert serve.party_management_address == f"party-management:{port(party_management.address)}"
    check = services["party-management"]["healthcheck"]["test"]
    assert f"('127.0.0.1', {port(party_management.address)})" in check[-1]

    # seed: calls serve on the port it listens on.
    seed = script("seed").parser().parse_args(services["seed"]["command"])
    assert seed.address == f"serve:{port(serve.grpc_address)}"


def test_each_service_starts_once_what_it_needs_is_ready(services: dict[str, dict[str, Any]]) -> None:
    def needs(name: str) -> dict[str, str]:
        return {other: value["condition"] for other, value in services[name]["depends_on"].items()}

    assert needs("migrate") == {"postgres": "service_healthy"}
    assert needs("serve") == {
        "migrate": "service_completed_successfully",
        "kafka": "service_healthy",
        "party-management": "service_healthy",
    }
    assert needs("seed") == {"serve": "service_healthy"}
    for one_shot in ("migrate", "seed"):
        assert services[one_shot]["restart"] == "no"


def test_the_demo_config_loads_and_names_the_accounts_a_fresh_database_gives_first(
    services: dict[str, dict[str, Any]],
) -> None:
    config_file = ROOT / "docker" / "party-management.json"
    for name in ("party-management", "seed"):
        arguments = services[name]["command"]
        mounted = arguments[arguments.index("--config") + 1]
        assert f"./docker/party-management.json:{mounted}:ro" in services[name]["volumes"]
    config = party_config.load(config_file)
    ids = sorted(script("seed").named_accounts(config))
    assert ids == list(range(1, len(ids) + 1))
    (party,) = json.loads(config_file.read_text())["parties"]
    assert party["payout_terms"][: len(party_config.EXAMPLE_TERMS)] == list(party_config.EXAMPLE_TERMS)


@pytest.fixture
def migrated_database_url(fresh_database_url: str) -> str:
    """A database of its own, migrated and without accounts, as compose's postgres starts."""
    migrations.upgrade(fresh_database_url)
    return fresh_database_url


def test_seed_funds_the_demo_shop_on_a_fresh_database_once(
    migrated_database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    process = Process(
        ["serve", "--address", address], {"PM_DATABASE_URL": migrated_database_url}, tmp_path / "serve.log"
    )
    try:
        wait_until_serving(address, process)
        seed = script("seed")
        config_path = str(ROOT / "docker" / "party-management.json")
        assert seed.main(["--address", address, "--config", config_path]) == 0
        assert seed.main(["--address", address, "--config", config_path]) == 0  # already seeded
        config = party_config.load(Path(config_path))
        (shop,) = config.parties["party-1"].shops.values()
        with grpc.insecure_channel(address) as channel:
            accounter = accounter_pb2_grpc.AccounterStub(channel)
            settlement = accounter.GetAccount(
                accounter_pb2.GetAccountRequest(account_id=shop.accounts.settlement)
            )
        assert (settlement.currency, settlement.own_amount) == (shop.currency, seed.FUNDS)
    finally:
        process.stop()


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client here: `docker compose config` not run")
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the docker client here has no compose plugin: `docker compose config` not run")
    result = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
