"""resource/*.mmd and the README's pictures are what scripts/diagrams.py draws from the code now."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from support.scripts import load_script

from payout_manager.api.server import SERVICES
from payout_manager.settings import Settings
from payout_manager.storage.tables import metadata

ROOT = Path(__file__).resolve().parents[2]
STALE = "run `make diagrams` and commit the result"


@pytest.fixture(scope="module")
def diagrams() -> ModuleType:
    return load_script("diagrams")


@pytest.fixture(scope="module")
def drawn(diagrams: ModuleType) -> dict[str, str]:
    result: dict[str, str] = diagrams.diagrams()
    return result


def test_each_diagram_is_drawn_twice_the_same(diagrams: ModuleType) -> None:
    assert diagrams.diagrams() == diagrams.diagrams()


@pytest.mark.parametrize("name", ["architecture", "schema"])
def test_committed_file_is_what_the_code_draws(drawn: dict[str, str], name: str) -> None:
    path = ROOT / "resource" / f"{name}.mmd"

    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: {STALE}"
    assert path.read_text() == drawn[name], f"{path.relative_to(ROOT)} is stale: {STALE}"


@pytest.mark.parametrize("name", ["architecture", "schema"])
def test_readme_block_is_what_the_code_draws(diagrams: ModuleType, drawn: dict[str, str], name: str) -> None:
    readme = (ROOT / "README.md").read_text()

    assert diagrams.readme_section(readme, name) == diagrams.readme_block(drawn[name]), (
        f"README.md's {name} picture is stale: {STALE}"
    )


def test_rewriting_the_readme_changes_only_the_marked_blocks(diagrams: ModuleType) -> None:
    readme = (
        "intro\n<!-- diagram:schema -->\nold\n<!-- /diagram:schema -->\nmiddle\n"
        "<!-- diagram:architecture --><!-- /diagram:architecture -->\nend\n"
    )

    rewritten = diagrams.with_diagrams(readme, {"schema": "erDiagram\n", "architecture": "flowchart LR\n"})

    assert rewritten == (
        "intro\n<!-- diagram:schema -->\n```mermaid\nerDiagram\n```\n<!-- /diagram:schema -->\nmiddle\n"
        "<!-- diagram:architecture -->\n```mermaid\nflowchart LR\n```\n<!-- /diagram:architecture -->\nend\n"
    )
    assert diagrams.with_diagrams(rewritten, {"schema": "erDiagram\n"}) == rewritten


def test_a_readme_without_the_markers_is_refused(diagrams: ModuleType) -> None:
    with pytest.raises(ValueError, match="diagram:schema"):
        diagrams.with_diagrams("no pictures here\n", {"schema": "erDiagram\n"})


def test_schema_has_every_table_with_every_column_and_its_type(drawn: dict[str, str]) -> None:
    schema = drawn["schema"]

    assert schema.startswith("erDiagram\n")
    for table in metadata.tables.values():
        entity = re.search(rf"^    {table.name} \{{\n(.*?)^    \}}$", schema, re.MULTILINE | re.DOTALL)
        assert entity is not None, f"table {table.name} is not drawn"
        names = [line.split()[1] for line in entity.group(1).splitlines()]
        assert names == list(table.columns.keys()), table.name
    assert "        bigint id PK\n" in schema
    assert "        timestamptz created_at\n" in schema
    assert "        bigint account_id PK, FK\n" in schema
    assert "        uuid event_id UK\n" in schema


def test_schema_has_every_foreign_key_as_a_relationship(drawn: dict[str, str]) -> None:
    relationships = re.findall(r'^    (\w+) \S+ (\w+) : "([\w, ]+)"$', drawn["schema"], re.MULTILINE)
    foreign_keys = [
        (fk.referred_table.name, table.name, ", ".join(fk.columns.keys()))
        for table in metadata.tables.values()
        for fk in table.foreign_key_constraints
    ]

    assert foreign_keys
    assert sorted(relationships) == sorted(foreign_keys)
    assert '    payout_event ||--o| payout_event_outbox : "event_row_id"' in drawn["schema"]
    assert '    account ||--o{ posting : "from_id"' in drawn["schema"]


def test_architecture_has_every_served_service_and_its_rpcs(drawn: dict[str, str]) -> None:
    architecture = drawn["architecture"]

    assert architecture.startswith("flowchart LR\n")
    for service in SERVICES:
        assert f'["{service.full_name}"]' in architecture
        for method in service.methods:
            assert method.name in architecture, method.full_name
    assert '["grpc.health.v1.Health"]' in architecture
    assert '["grpc.reflection.v1alpha.ServerReflection"]' in architecture


def test_architecture_has_party_management_kafka_and_every_table(drawn: dict[str, str]) -> None:
    architecture = drawn["architecture"]

    assert "party_management.v1.PartyManagement" in architecture
    assert '-->|"ComputePayoutCashFlow"| party_management_v1_PartyManagement' in architecture
    assert f"Kafka topic {Settings(database_url=None).kafka_topic}" in architecture
    assert "relay -->" in architecture and "| topic" in architecture
    assert "payout-manager events" in architecture
    assert 'prometheus -->|"scrape"| metrics' in architecture
    for table in metadata.tables.values():
        assert re.search(rf"(\(\"|<br/>){table.name}(<br/>|\"\))", architecture), table.name
    assert '[("outbox<br/>payout_event_outbox")]' in architecture
