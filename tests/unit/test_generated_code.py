"""The committed payout_manager/proto/ is what proto/ generates; the protos follow SPEC 1's naming."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor
from grpc_tools import protoc
from support.scripts import load_script

from payout_manager.proto.accounter.v1 import accounter_pb2
from payout_manager.proto.party_management.v1 import party_management_pb2
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "payout_manager" / "proto"
GENERATED_MODULES = (accounter_pb2, party_management_pb2, payout_manager_pb2)
STALE = "payout_manager/proto/ is stale: run `make proto` and commit the result"


def source_files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by its relative path, without Python's bytecode caches."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()


def enums(file: FileDescriptor) -> Iterator[EnumDescriptor]:
    """Every enum of the file, nested ones included."""
    yield from file.enum_types_by_name.values()

    def nested(message: Descriptor) -> Iterator[EnumDescriptor]:
        yield from message.enum_types
        for inner in message.nested_types:
            yield from nested(inner)

    for message in file.message_types_by_name.values():
        yield from nested(message)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory: Path = load_script("gen_proto").generate(tmp_path_factory.mktemp("generated"))
    return source_files(directory)


def test_committed_generated_code_has_the_same_files_as_a_fresh_generation(
    generated: dict[str, bytes],
) -> None:
    committed = source_files(COMMITTED)

    missing = sorted(generated.keys() - committed.keys())
    extra = sorted(committed.keys() - generated.keys())
    assert not missing and not extra, f"{STALE} (missing: {missing}, not generated any more: {extra})"


def test_committed_generated_code_is_byte_for_byte_a_fresh_generation(generated: dict[str, bytes]) -> None:
    committed = source_files(COMMITTED)

    differing = sorted(name for name, content in generated.items() if committed.get(name) != content)
    assert not differing, f"{STALE} (differing: {differing})"


def test_a_fresh_generation_has_python_and_stubs_for_every_proto(generated: dict[str, bytes]) -> None:
    proto_dir = ROOT / "proto"
    protos = sorted(path.relative_to(proto_dir).with_suffix("") for path in proto_dir.rglob("*.proto"))

    assert protos, "no .proto files found under proto/"
    for proto in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert f"{proto.as_posix()}{suffix}" in generated


def test_proto_packages_are_the_spec_ones() -> None:
    packages = {module.DESCRIPTOR.package for module in GENERATED_MODULES}

    assert packages == {"payout_manager.v1", "accounter.v1", "party_management.v1"}


@pytest.mark.parametrize("module", GENERATED_MODULES, ids=lambda module: module.DESCRIPTOR.name)
def test_every_enum_starts_with_an_unspecified_zero(module: ModuleType) -> None:
    file: FileDescriptor = module.DESCRIPTOR
    for enum in enums(file):
        zero = enum.values_by_number.get(0)
        assert zero is not None, f"{enum.full_name} has no zero value"
        assert enum.values[0].number == 0, f"{enum.full_name}: the zero value must come first"
        assert zero.name == f"{upper_snake(enum.name)}_UNSPECIFIED", f"{enum.full_name}: zero is {zero.name}"


@pytest.mark.parametrize("module", GENERATED_MODULES, ids=lambda module: module.DESCRIPTOR.name)
def test_every_enum_value_carries_its_type_prefix(module: ModuleType) -> None:
    file: FileDescriptor = module.DESCRIPTOR
    for enum in enums(file):
        prefix = f"{upper_snake(enum.name)}_"
        unprefixed = [value.name for value in enum.values if not value.name.startswith(prefix)]
        assert not unprefixed, f"{enum.full_name}: values without the prefix {prefix}: {unprefixed}"


def test_upper_snake_spells_the_spec_prefixes() -> None:
    assert upper_snake("PayoutStatus") == "PAYOUT_STATUS"
    assert upper_snake("AccountType") == "ACCOUNT_TYPE"
    assert upper_snake("PostingPlanStatus") == "POSTING_PLAN_STATUS"
    assert upper_snake("HTTPStatus") == "HTTP_STATUS"


@pytest.mark.parametrize(
    "proto",
    sorted((ROOT / "proto").rglob("*.proto")),
    ids=lambda path: path.relative_to(ROOT / "proto").as_posix(),
)
def test_each_contract_file_compiles_alone_with_only_proto_on_the_include_path(
    proto: Path, tmp_path: Path
) -> None:
    # As a stock `protoc -I proto FILE` does: its own include directory has the well-known types.
    well_known = Path(protoc.__file__).parent / "_proto"
    arguments = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{well_known}",
        f"--descriptor_set_out={tmp_path / 'out.pb'}",
    ]

    assert protoc.main([*arguments, proto.relative_to(ROOT / "proto").as_posix()]) == 0


@pytest.mark.parametrize("module", GENERATED_MODULES, ids=lambda module: module.DESCRIPTOR.name)
def test_descriptors_carry_the_contract_file_names_that_reflection_serves(module: ModuleType) -> None:
    file: FileDescriptor = module.DESCRIPTOR
    assert (ROOT / "proto" / file.name).is_file()
    assert all(
        (ROOT / "proto" / dependency.name).is_file() or dependency.name.startswith("google/")
        for dependency in file.dependencies
    )
