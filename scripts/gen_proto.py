"""Generates the Python code of proto/ into payout_manager/proto/ (run: make proto).

The proto files live in proto/<package>/v1/ and are compiled under the virtual path
payout_manager/proto/, so the generated modules import each other as
payout_manager.proto.<package>.v1 without any rewriting.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "payout_manager/proto"
OUTPUT_DIR = ROOT / PACKAGE


def generate(output_root: Path) -> Path:
    """Compiles every .proto file; returns the directory holding payout_manager/proto."""
    sources = sorted(path.relative_to(PROTO_DIR).as_posix() for path in PROTO_DIR.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    plugin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE}={PROTO_DIR}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"--mypy_out=quiet:{output_root}",
        f"--mypy_grpc_out=quiet:{output_root}",
        *(f"{PACKAGE}/{source}" for source in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = output_root / PACKAGE
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
