"""Generates the Python code of proto/ into payout_manager/proto/ (run: make proto).

The contract stands alone: proto/ compiles with a stock `protoc -I proto`, every import relative
to proto/ (`party_management/v1/party_management.proto`), as googleapis and consumers in any language
expect. Its Python home, `payout_manager.proto`, is this generator's concern only: protoc writes the
modules as top-level packages (`party_management.v1`), and their imports of each other are then
rewritten to `payout_manager.proto.party_management.v1`, as temporalio's scripts/gen_protos.py does
for its own package. The descriptors keep the contract's file names, so server reflection serves
the files a consumer compiles.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "payout_manager.proto"
OUTPUT_DIR = ROOT / PACKAGE.replace(".", "/")


def _packages() -> list[str]:
    """The contract's top-level proto directories (accounter, party_management, payout_manager)."""
    return sorted(path.name for path in PROTO_DIR.iterdir() if path.is_dir())


def _rewrite(text: str, packages: list[str]) -> str:
    """Moves every reference to a generated module under PACKAGE."""
    names = "|".join(re.escape(name) for name in packages)
    # `from accounter.v1 import ...` and `import accounter.v1...` at the start of a line, and the
    # module names protoc writes into strings ('accounter.v1.accounter_pb2').
    text = re.sub(rf"^(from|import) ({names})\.", rf"\1 {PACKAGE}.\2.", text, flags=re.MULTILINE)
    text = re.sub(rf"(['\"])({names})(\.\w+)*\.(\w+_pb2)\1", rf"\1{PACKAGE}.\2\3.\4\1", text)
    # The path gRPC's version check names in its message.
    return re.sub(rf"(generated code in )({names})/", rf"\1{PACKAGE.replace('.', '/')}/\2/", text)


def generate(output_root: Path) -> Path:
    """Compiles every .proto file; returns the directory holding the payout_manager.proto package."""
    sources = sorted(path.relative_to(PROTO_DIR).as_posix() for path in PROTO_DIR.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    plugin_dir = Path(sys.executable).parent
    raw = output_root / "raw"
    raw.mkdir()
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={raw}",
        f"--grpc_python_out={raw}",
        f"--mypy_out=quiet:{raw}",
        f"--mypy_grpc_out=quiet:{raw}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    packages = _packages()
    generated = output_root / PACKAGE.replace(".", "/")
    for path in sorted(raw.rglob("*")):
        if path.is_file():
            target = generated / path.relative_to(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_rewrite(path.read_text(), packages))
    for directory in [generated, *(p for p in generated.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return generated


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        generated = generate(Path(scratch))
        shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
        shutil.copytree(generated, OUTPUT_DIR)
    print(f"generated {sum(1 for _ in OUTPUT_DIR.rglob('*.py'))} modules in {OUTPUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
