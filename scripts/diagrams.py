"""Draws the architecture and the database schema from the code, as Mermaid (run: make diagrams).

Writes resource/architecture.mmd and resource/schema.mmd, and the same text into README.md between
the markers `<!-- diagram:NAME -->` and `<!-- /diagram:NAME -->`. tests/unit/test_diagrams.py fails
when what is committed is not what this draws, so a change of the schema or of the served services
without `make diagrams` does not pass CI.

What comes from the code: the served services and their RPCs (the descriptors the server
registers), PartyManagement and the RPCs the payout manager calls on it (its descriptor, and the
calls in payout_manager/), the addresses, the metrics switch and the Kafka topic (the settings'
defaults), the event's message type (the relay's header), the ledger's tables (those the ledger code
uses), every table, column, key and foreign key (the one MetaData). What is drawn by hand here: who
the callers are, and what each arrow into the database means.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from sqlalchemy import Column, ForeignKeyConstraint, Table, UniqueConstraint
from sqlalchemy.dialects.postgresql.base import PGDialect

from payout_manager import expiry
from payout_manager.api import server
from payout_manager.events import relay
from payout_manager.proto.accounter.v1 import accounter_pb2
from payout_manager.proto.party_management.v1 import party_management_pb2
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2
from payout_manager.settings import Settings
from payout_manager.storage import ledger, tables

ROOT = Path(__file__).resolve().parent.parent
RESOURCE_DIR = ROOT / "resource"
README = ROOT / "README.md"
PACKAGE_DIR = ROOT / "payout_manager"

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
PARTY_MANAGEMENT = party_management_pb2.DESCRIPTOR.services_by_name["PartyManagement"]
PAYOUT_MANAGEMENT = payout_manager_pb2.DESCRIPTOR.services_by_name["PayoutManagement"]
ACCOUNTER = accounter_pb2.DESCRIPTOR.services_by_name["Accounter"]
# Every service `serve` answers, in the order the server registers them.
SERVED: tuple[ServiceDescriptor, ...] = (*server.SERVICES, HEALTH, REFLECTION)

# The node ids of the database's three groups of tables.
LEDGER, PAYOUTS, OUTBOX = "ledger_tables", "payout_tables", "outbox_table"
# RPC names per line of an edge label.
_NAMES_PER_LINE = 3


def node_id(service: ServiceDescriptor) -> str:
    return re.sub(r"\W", "_", service.full_name)


def _lines(names: Iterable[str]) -> str:
    names = list(names)
    rows = [", ".join(names[i : i + _NAMES_PER_LINE]) for i in range(0, len(names), _NAMES_PER_LINE)]
    return "<br/>".join(rows)


def _rpcs(service: ServiceDescriptor) -> str:
    return _lines(method.name for method in service.methods)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def called_methods(package_dir: Path) -> set[str]:
    """The names of every `x.name(...)` call in the package's own (not generated) code."""
    names: set[str] = set()
    for path in sorted(package_dir.rglob("*.py")):
        if "proto" in path.relative_to(package_dir).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                names.add(node.func.attr)
    return names


def table_groups() -> dict[str, list[Table]]:
    """The metadata's tables in three groups: what the ledger code uses, the outbox, the rest."""
    ledger_tables = {value for value in vars(ledger).values() if isinstance(value, Table)}
    groups: dict[str, list[Table]] = {LEDGER: [], PAYOUTS: [], OUTBOX: []}
    for table in tables.metadata.tables.values():
        if table is tables.payout_event_outbox:
            groups[OUTBOX].append(table)
        elif table in ledger_tables:
            groups[LEDGER].append(table)
        else:
            groups[PAYOUTS].append(table)
    return groups


def architecture(package_dir: Path = PACKAGE_DIR) -> str:
    """The services, the database, Kafka and PartyManagement, and who calls whom (a flowchart)."""
    settings = Settings(database_url=None)
    calls = called_methods(package_dir)
    party_rpcs = [m.name for m in PARTY_MANAGEMENT.methods if _snake(m.name) in calls]
    groups = table_groups()
    titles = {LEDGER: "ledger tables", PAYOUTS: "payout tables", OUTBOX: "outbox"}
    payout_management = node_id(PAYOUT_MANAGEMENT)
    message_type = relay.HEADERS_MESSAGE_TYPE[1].decode()

    out = ["flowchart LR"]
    out.append('    backoffice["back-office clients"]')
    out.append('    probes["health probes, grpcurl"]')
    out.append(f'    subgraph serve["payout-manager serve, {settings.grpc_address}"]')
    out.extend(f'        {node_id(service)}["{service.full_name}"]' for service in SERVED)
    out.append('        relay["event relay<br/>one leader per database"]')
    out.append('        expiry["expiry of UNPAID payouts<br/>PM_UNPAID_PAYOUT_TTL, one leader per database"]')
    metrics_where = settings.metrics_address or "PM_METRICS_ADDRESS, off by default"
    out.append(f'        metrics["Prometheus metrics<br/>{metrics_where}"]')
    out.append("    end")
    out.append(
        f'    {node_id(PARTY_MANAGEMENT)}["{PARTY_MANAGEMENT.full_name}<br/>'
        f'{settings.party_management_address}"]'
    )
    out.append('    subgraph postgresql["PostgreSQL"]')
    for group, members in groups.items():
        names = "<br/>".join(table.name for table in members)
        out.append(f'        {group}[("{titles[group]}<br/>{names}")]')
    out.append("    end")
    out.append(f'    topic[["Kafka topic {settings.kafka_topic}"]]')
    out.append('    consumers["consumers<br/>payout-manager events"]')
    out.append('    prometheus["Prometheus"]')

    for service in server.SERVICES:
        out.append(f'    backoffice -->|"{_rpcs(service)}"| {node_id(service)}')
    for service in (HEALTH, REFLECTION):
        out.append(f'    probes -->|"{_rpcs(service)}"| {node_id(service)}')
    out.append(f'    {payout_management} -->|"{_lines(party_rpcs)}"| {node_id(PARTY_MANAGEMENT)}')
    out.append(f'    {payout_management} -->|"hold, commit, rollback"| {LEDGER}')
    out.append(f'    {payout_management} -->|"payout and its events"| {PAYOUTS}')
    out.append(f'    {payout_management} -->|"one row per event"| {OUTBOX}')
    out.append(f'    {node_id(ACCOUNTER)} -->|"accounts, plans, balances"| {LEDGER}')
    out.append(f'    relay -->|"reads in id order,<br/>deletes what Kafka acked"| {OUTBOX}')
    out.append(f'    relay -->|"event payloads"| {PAYOUTS}')
    out.append(f'    relay -->|"{message_type}<br/>key = payout id"| topic')
    out.append(f'    expiry -->|"cancels UNPAID payouts past the TTL,<br/>with their events"| {PAYOUTS}')
    out.append(f'    expiry -->|"rolls back their holds"| {LEDGER}')
    out.append(f'    expiry -->|"pauses while over {expiry.OUTBOX_LIMIT} events wait"| {OUTBOX}')
    out.append('    topic -->|"consumer group"| consumers')
    out.append('    prometheus -->|"scrape"| metrics')
    out.append(f'    metrics -->|"payouts by status"| {PAYOUTS}')
    out.append(f'    metrics -->|"size, oldest age"| {OUTBOX}')
    return "\n".join(out) + "\n"


def _column_type(column: Column[object]) -> str:
    # The types as PostgreSQL spells them (the dialect's constructor has no annotations).
    compiled = column.type.compile(dialect=PGDialect()).lower()  # type: ignore[no-untyped-call]
    return compiled.replace("timestamp with time zone", "timestamptz").replace(" ", "_")


def _column_line(table: Table, column: Column[object]) -> str:
    keys = []
    if column.primary_key:
        keys.append("PK")
    if column.foreign_keys:
        keys.append("FK")
    uniques = [c for c in table.constraints if isinstance(c, UniqueConstraint) and column.name in c.columns]
    if column.unique or any(len(c.columns) == 1 for c in uniques):
        keys.append("UK")
    notes = [f"unique ({', '.join(c.columns.keys())})" for c in uniques if len(c.columns) > 1]
    if column.nullable:
        notes.append("nullable")
    line = f"        {_column_type(column)} {column.name}"
    if keys:
        line += " " + ", ".join(keys)
    if notes:
        line += f' "{"; ".join(notes)}"'
    return line


def _foreign_keys(table: Table) -> list[ForeignKeyConstraint]:
    order = table.columns.keys()
    return sorted(
        table.foreign_key_constraints, key=lambda fk: [order.index(column.name) for column in fk.columns]
    )


def relationship(table: Table, foreign_key: ForeignKeyConstraint) -> str:
    """One foreign key as an erDiagram relationship: the referred table, then the referring one."""
    columns = set(foreign_key.columns.keys())
    one_each = columns == set(table.primary_key.columns.keys()) or any(
        isinstance(c, UniqueConstraint) and set(c.columns.keys()) == columns for c in table.constraints
    )
    nullable = any(column.nullable for column in foreign_key.columns)
    left = "|o" if nullable else "||"
    right = "o|" if one_each else "o{"
    label = ", ".join(foreign_key.columns.keys())
    return f'    {foreign_key.referred_table.name} {left}--{right} {table.name} : "{label}"'


def schema() -> str:
    """Every table of the metadata with its columns, keys and foreign keys (an erDiagram)."""
    out = ["erDiagram"]
    for table in tables.metadata.tables.values():
        out.append(f"    {table.name} {{")
        out.extend(_column_line(table, column) for column in table.columns)
        out.append("    }")
    for table in tables.metadata.tables.values():
        out.extend(relationship(table, foreign_key) for foreign_key in _foreign_keys(table))
    return "\n".join(out) + "\n"


def diagrams() -> dict[str, str]:
    """Each diagram's name (its file resource/NAME.mmd and its README marker) and its text."""
    return {"architecture": architecture(), "schema": schema()}


def readme_block(diagram: str) -> str:
    """What stands between a diagram's markers in the README."""
    return f"\n```mermaid\n{diagram}```\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- diagram:{name} -->", f"<!-- /diagram:{name} -->"


def readme_section(readme: str, name: str) -> str:
    """The text between the diagram's markers; ValueError when they are missing."""
    start, end = _markers(name)
    _, found, rest = readme.partition(start)
    inside, found_end, _ = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"README.md lacks the markers {start} ... {end}")
    return inside


def with_diagrams(readme: str, drawn: Mapping[str, str]) -> str:
    """The README with each diagram's block between its markers replaced by the one drawn."""
    for name, diagram in drawn.items():
        start, end = _markers(name)
        old = start + readme_section(readme, name) + end
        readme = readme.replace(old, start + readme_block(diagram) + end, 1)
    return readme


def main() -> None:
    drawn = diagrams()
    RESOURCE_DIR.mkdir(exist_ok=True)
    for name, diagram in drawn.items():
        (RESOURCE_DIR / f"{name}.mmd").write_text(diagram)
    README.write_text(with_diagrams(README.read_text(), drawn))
    print(f"drew {', '.join(f'resource/{name}.mmd' for name in drawn)} and their blocks in README.md")


if __name__ == "__main__":
    main()
