"""The README's "Calling it" session, run as written against a real demo (`python -m local_stack`).

The commands come from README.md itself: the ```sh block under "## Calling it" (grpcurl, pinned
in the Makefile, `go install`ed into .tools/bin) and the events block after it. Editing the README
changes what runs. What the README's comments claim is checked through CLAIMS, a small table from
a comment's wording to a check of the output; a claim the README no longer makes fails the test, so
that the table follows the README. The other comments are narration.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

# The demo as test_demo starts it (free ports, its own Kafka); pytest puts tests/e2e on the path.
from support.demo import start_demo
from support.processes import Process
from support.tools import ensure_tool

from local_stack.kafka import java_available

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Calling it"
# Where the README's `G=` line and the Makefile's `make tools` put grpcurl.
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
# The addresses the README names, replaced by the demo's free ports.
README_ADDRESS = "127.0.0.1:8022"
README_KAFKA = "127.0.0.1:9092"
COMMAND_TIMEOUT = 60
# How long the events command may wait for a record before it gives up.
EVENTS_IDLE_TIMEOUT = "30"

# Installing grpcurl on a fresh machine, then a first demo start that downloads Kafka, take more
# than the default 300 s; with both at hand the module takes about 20 s.
pytestmark = pytest.mark.timeout(900)

Run = subprocess.CompletedProcess[str]


@dataclass
class Demo:
    process: Process
    address: str
    kafka: str

    def substitute(self, text: str) -> str:
        return text.replace(README_ADDRESS, self.address).replace(README_KAFKA, self.kafka)


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


def check_payout(match: re.Match[str], step: Step, _: Demo) -> None:
    payout = step.json()
    assert (payout["amount"], payout["fee"], payout["status"], payout["revision"]) == (
        match["amount"],
        match["fee"],
        match["status"],
        match["revision"],
    ), step.output


def check_repeatable(_: re.Match[str], step: Step, __: Demo) -> None:
    repeated = step.repeated
    assert repeated is not None
    assert repeated.returncode == 0, repeated.stderr
    assert json.loads(repeated.stdout) == step.json()


def check_settlement_account(match: re.Match[str], step: Step, demo: Demo) -> None:
    assert f"settlement account {match['id']}\n" in demo.process.output()
    assert step.json()["id"] == match["id"], step.output


def check_hold(match: re.Match[str], step: Step, _: Demo) -> None:
    account = step.json()
    assert (account["own_amount"], account["min_available_amount"]) == (
        match["own"],
        match["min_available"],
    ), step.output


def check_cancelled(_: re.Match[str], step: Step, __: Demo) -> None:
    assert step.json()["status"] == "PAYOUT_STATUS_CANCELLED", step.output


def check_refusal(match: re.Match[str], step: Step, _: Demo) -> None:
    assert step.run.returncode != 0, step.output
    # grpcurl names codes in CamelCase: INVALID_ARGUMENT is "InvalidArgument".
    code = "".join(word.capitalize() for word in match["code"].split("_"))
    assert f"Code: {code}" in step.output
    # "google.rpc.ErrorInfo and BadRequest": the second is in the first one's package.
    for detail in match["details"].split(" and "):
        assert re.search(rf'"@type": "type\.googleapis\.com/([\w.]+\.)?{re.escape(detail)}"', step.output)


CLAIMS = (
    Claim(re.compile(r"the id makes the call safe to repeat"), "next", check_repeatable, repeat=True),
    Claim(
        re.compile(
            r"^amount (?P<amount>\d+), fee (?P<fee>\d+) .*status (?P<status>\w+), revision (?P<revision>\d+)$"
        ),
        "previous",
        check_payout,
    ),
    Claim(
        re.compile(r"the demo prints its id; (?P<id>\d+) on a fresh demo"), "next", check_settlement_account
    ),
    Claim(
        re.compile(r"^own_amount (?P<own>\d+), min_available_amount (?P<min_available>\d+)$"),
        "previous",
        check_hold,
    ),
    Claim(re.compile(r"^reverts the confirmed payout$"), "previous", check_cancelled),
    Claim(
        re.compile(r"^A refusal: (?P<code>[A-Z_]+) with (?P<details>[\w.]+(?: and [\w.]+)*) details\.$"),
        "next",
        check_refusal,
        refusal=True,
    ),
)
# One line of the events command's output as the README shows it: its sequence id and its change.
EVENT_LINE = re.compile(
    r'"sequence_id":"(?P<sequence_id>\d+)".*"(?P<kind>created|status_changed)":\{'
    r'(?:"status":"(?P<status>\w+)")?(?:,"details":"(?P<details>[^"]*)")?'
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


def readme_block(containing: str) -> tuple[int, str]:
    """The ```sh block under "Calling it" holding `containing`, and the README line it starts on."""
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
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


@pytest.fixture(scope="module")
def grpcurl() -> None:
    """The README's grpcurl in .tools/bin, from the Makefile's pinned `go install` when it is missing."""
    assert ensure_tool(GRPCURL.name) == GRPCURL


@pytest.fixture(scope="module")
def demo(grpcurl: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo from an empty data directory, on free ports (Kafka when a JDK is here)."""
    process, address, kafka_port = start_demo(tmp_path_factory.mktemp("readme-demo"))
    yield Demo(process, address, f"127.0.0.1:{kafka_port}")
    process.stop(signal.SIGINT, timeout=60)


@pytest.fixture(scope="module")
def session(demo: Demo) -> list[Step]:
    """The grpcurl block run in order, each command with the claims the README's comments make of it."""
    grpcurl: str | None = None
    steps: list[Step] = []
    pending: list[tuple[Claim, re.Match[str]]] = []
    for number, command, comment in logical_lines(*readme_block("$G ")):
        if command == "make tools":
            assert GRPCURL.exists(), "the grpcurl fixture runs the Makefile's target for it"
        elif command.startswith("G="):
            grpcurl = shlex.split(command)[0].removeprefix("G=")
        elif command.startswith("$G "):
            assert grpcurl is not None, f"README line {number} uses $G before it is set"
            argv = shlex.split(demo.substitute(command.replace("$G", grpcurl, 1)))
            step = Step(number, command, argv, run(argv), pending)
            if any(claim.repeat for claim, _ in pending):
                step.repeated = run(argv)
            steps.append(step)
            pending = []
        elif command:
            raise AssertionError(f"README line {number}: a command this test does not know: {command}")
        for claim in CLAIMS:
            match = claim.pattern.search(comment) if comment else None
            if match and claim.about == "next":
                pending.append((claim, match))
            elif match:
                assert steps, f"README line {number} speaks of a command before the first one"
                steps[-1].claims.append((claim, match))
    assert not pending, "a README comment speaks of a command after the last one"
    return steps


def test_the_readme_grpcurl_session_runs_as_documented(session: list[Step], demo: Demo) -> None:
    made = [claim for step in session for claim, _ in step.claims]
    unmade = [claim.pattern.pattern for claim in CLAIMS if made.count(claim) != 1]
    assert not unmade, f"the README no longer makes these claims (once each); update CLAIMS: {unmade}"
    for step in session:
        if not any(claim.refusal for claim, _ in step.claims):
            assert step.run.returncode == 0, f"README line {step.line}: {step.command}\n{step.output}"
        for claim, match in step.claims:
            claim.check(match, step, demo)


@pytest.mark.skipif(not java_available(), reason="no JDK here: the demo's Kafka cannot start")
def test_the_readme_events_commands_print_the_sessions_events(session: list[Step], demo: Demo) -> None:
    env = dict(os.environ)
    commands: list[tuple[int, str, list[re.Match[str]]]] = []
    for number, command, comment in logical_lines(*readme_block("payout-manager events")):
        if command.startswith("export "):
            name, _, value = shlex.split(command)[1].partition("=")
            env[name] = demo.substitute(value)
        elif command:
            commands.append((number, command, []))
        elif comment and (event := EVENT_LINE.search(comment)):
            commands[-1][2].append(event)
    expected = max(len(events) for _, _, events in commands)
    assert expected > 0, "the README shows no event line"

    for number, command, events in commands:
        # Each stage of a pipeline reads the one before; the events command stops after the events
        # the session made rather than waiting for more.
        output = ""
        for stage in command.split(" | "):
            argv = shlex.split(stage)
            if argv[:2] == [".venv/bin/payout-manager", "events"]:
                argv[0] = str(Path(sys.executable).with_name("payout-manager"))
                argv += ["--max-events", str(expected), "--idle-timeout", EVENTS_IDLE_TIMEOUT]
            elif shutil.which(argv[0]) is None:
                pytest.skip(f"README line {number} pipes into {argv[0]}, which is not installed here")
            ran = run(argv, env, stdin=output)
            assert ran.returncode == 0, f"README line {number}: {stage}\n{ran.stderr}"
            output = ran.stdout
        lines = output.splitlines()
        assert len(lines) == expected, f"README line {number}: {command}\n{output}"
        for line, event in zip(lines if events else [], events, strict=True):
            check_event(json.loads(line), event)


def check_event(event: dict[str, Any], expected: re.Match[str]) -> None:
    assert event["sequence_id"] == expected["sequence_id"], event
    assert list(event["payout_change"]) == [expected["kind"]], event
    change = event["payout_change"][expected["kind"]]
    for name in ("status", "details"):
        if expected[name] is not None:
            assert change[name] == expected[name], event
