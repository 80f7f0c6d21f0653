"""The contract's guard (run by `make lint`): proto/ builds, passes `buf lint`, breaks nothing.

`buf breaking` compares proto/ with the last release tag, or, before the first release, with the
first commit that has buf.yaml: what callers and event consumers compiled then must still decode.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / ".tools" / "bin" / "buf"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def baseline() -> str:
    """The release the contract must stay compatible with: a tag, or the commit that added buf.yaml."""
    tag = git("describe", "--tags", "--abbrev=0")
    if tag:
        return tag
    added = git("log", "--diff-filter=A", "--format=%H", "--", "buf.yaml").splitlines()
    return added[-1] if added else ""


def buf(*args: str) -> None:
    print(f"buf {' '.join(args)}", flush=True)
    if subprocess.run([str(BUF), *args], cwd=ROOT, check=False).returncode != 0:
        raise SystemExit(1)


def main() -> None:
    if not BUF.exists():
        raise SystemExit(f"{BUF} is missing: run `make tools`")
    buf("build")
    buf("lint")
    against = baseline()
    if not against:
        print("buf breaking: no release tag and no commit with buf.yaml yet, nothing to compare with")
        return
    buf("breaking", "--against", f".git#ref={against}")


if __name__ == "__main__":
    main()
