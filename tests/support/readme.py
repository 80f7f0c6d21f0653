"""Running the README's grpcurl sessions as written, against a real demo (`python -m local_stack`).

A session is a ```sh block under a README section: `NAME="..."` lines set a grpcurl command line,
`$NAME ...` lines run it. What the README's comments claim is checked through claims, small
entries from a comment's wording to a check of the output; a claim a section no longer makes fails
its test, so that the claims follow the README. The other comments are narration.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from payout_manager_testing.processes import Process

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Where the README's grpcurl lines and the Makefile's `make tools` put grpcurl.
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
# The addresses and the data directory the README names, replaced by the demo's own.
README_ADDRESS = "127.0.0.1:8022"
README_KAFKA = "127.0.0.1:9092"
README_DATA_DIR = ".demo/"
COMMAND_TIMEOUT = 60
# `$(cat FILE)` in a README command: the shell's command substitution, done here by reading FILE.
_CAT = re.compile(r"\$\(cat ([^)\s]+)\)")

Run = subprocess.CompletedProcess[str]


@dataclass
class Demo:
    process: Process
    address: str
    kafka: str
    data_dir: Path

    def substitute(self, text: str) -> str:
        text = text.replace(README_ADDRESS, self.address).replace(README_KAFKA, self.kafka)
        return text.replace(README_DATA_DIR, f"{self.data_dir}/")


@dataclass
class Step:
    """One README command, as the README writes it, and what running it gave."""

    line: int
    command: str
    argv: list[str]
    run: Run
    claims: list[tuple[Claim, re.Match[str]]] = field(default_factory=list)
    # The same command once more, right after, when a claim is about repeating it.
    repeated: Run | None = None

    @property
    def output(self) -> str:
        return self.run.stdout + self.run.stderr

    def json(self) -> Any:
        return json.loads(self.run.stdout)


@dataclass(frozen=True)
class Claim:
    """A README comment's wording, which command it speaks of, and the check of what it says."""

    pattern: re.Pattern[str]
    about: Literal["previous", "next"]
    check: Callable[[re.Match[str], Step, Demo], None]
    refusal: bool = False
    repeat: bool = False


def check_refusal(match: re.Match[str], step: Step, _: Demo) -> None:
    assert step.run.returncode != 0, step.output
    # grpcurl names codes in CamelCase: INVALID_ARGUMENT is "InvalidArgument".
    code = "".join(word.capitalize() for word in match["code"].split("_"))
    assert f"Code: {code}" in step.output
    # "google.rpc.ErrorInfo and BadRequest": the second is in the first one's package.
    for detail in match["details"].split(" and "):
        assert re.search(rf'"@type": "type\.googleapis\.com/([\w.]+\.)?{re.escape(detail)}"', step.output)
    if match["reason"]:
        assert f'"reason": "{match["reason"]}"' in step.output, step.output


def check_hold(match: re.Match[str], step: Step, _: Demo) -> None:
    account = step.json()
    assert (account["own_amount"], account["min_available_amount"]) == (
        match["own"],
        match["min_available"],
    ), step.output


REFUSAL = Claim(
    re.compile(
        r"^A refusal: (?P<code>[A-Z_]+)(?: / (?P<reason>[A-Z_]+))? with (?P<details>[\w.]+(?: and [\w.]+)*)"
        r" details\.$"
    ),
    "next",
    check_refusal,
    refusal=True,
)
HOLD = Claim(
    re.compile(r"^own_amount (?P<own>\d+), min_available_amount (?P<min_available>\d+)$"),
    "previous",
    check_hold,
)


def run(argv: list[str], env: dict[str, str] | None = None, stdin: str = "") -> Run:
    """One command in the repository's root, as the README's relative paths want."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def readme_block(section: str, containing: str) -> tuple[int, str]:
    """The ```sh block under `section` holding `containing`, and the README line it starts on."""
    text = README.read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n## ", start + 1)
    (block,) = (
        block
        for block in re.finditer(r"^```sh\n(.*?)^```$", text[:end], re.DOTALL | re.MULTILINE)
        if block.start() > start and containing in block[1]
    )
    return text.count("\n", 0, block.start(1)) + 1, block[1]


def logical_lines(first: int, block: str) -> Iterator[tuple[int, str, str]]:
    """(README line number, command, its comment) for each line as the shell reads it.

    A line ending in a backslash, or inside an open quote, goes on to the next one. A comment is a
    line's `# ...`, alone or after a command (the README's JSON holds no ` #`).
    """
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        number, text = first + index, lines[index]
        while text.endswith("\\") or not quotes_closed(text):
            index += 1
            text = (text.removesuffix("\\") if text.endswith("\\") else text + "\n") + lines[index]
        index += 1
        command, _, comment = re.sub(r"(?:^|\s+)#(?:\s+|$)", "\0", text.strip(), count=1).partition("\0")
        yield number, command.strip(), comment.strip()


def quotes_closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def _expanded(argv: list[str]) -> list[str]:
    return [_CAT.sub(lambda m: (ROOT / m[1]).read_text().strip(), arg) for arg in argv]


def run_session(section: str, demo: Demo, claims: Sequence[Claim]) -> list[Step]:
    """The section's grpcurl block run in order, each command with the claims its comments make."""
    commands: dict[str, str] = {}
    steps: list[Step] = []
    pending: list[tuple[Claim, re.Match[str]]] = []
    for number, command, comment in logical_lines(*readme_block(section, ".tools/bin/grpcurl")):
        assignment = re.fullmatch(r"([A-Z])=(.*)", command)
        if command == "make tools":
            assert GRPCURL.exists(), "the grpcurl fixture runs the Makefile's target for it"
        elif assignment:
            commands[assignment[1]] = shlex.split(assignment[2])[0]
        elif command.startswith("$"):
            name, _, rest = command[1:].partition(" ")
            assert name in commands, f"README line {number} uses ${name} before it is set"
            argv = _expanded(shlex.split(demo.substitute(f"{commands[name]} {rest}")))
            step = Step(number, command, argv, run(argv), pending)
            if any(claim.repeat for claim, _ in pending):
                step.repeated = run(argv)
            steps.append(step)
            pending = []
        elif command:
            raise AssertionError(f"README line {number}: a command this test does not know: {command}")
        for claim in claims:
            match = claim.pattern.search(comment) if comment else None
            if match and claim.about == "next":
                pending.append((claim, match))
            elif match:
                assert steps, f"README line {number} speaks of a command before the first one"
                steps[-1].claims.append((claim, match))
    assert not pending, "a README comment speaks of a command after the last one"
    return steps


def assert_session_as_documented(session: list[Step], claims: Sequence[Claim], demo: Demo) -> None:
    """Every claim made at least once, every command but the refusals succeeded, each claim holds."""
    made = [claim for step in session for claim, _ in step.claims]
    unmade = [claim.pattern.pattern for claim in claims if claim not in made]
    assert not unmade, f"the README no longer makes these claims; update the test's claims: {unmade}"
    for step in session:
        if not any(claim.refusal for claim, _ in step.claims):
            assert step.run.returncode == 0, f"README line {step.line}: {step.command}\n{step.output}"
        for claim, match in step.claims:
            claim.check(match, step, demo)
