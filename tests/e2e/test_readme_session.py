"""The README's "Calling it" session, run as written against a real demo (`python -m local_stack`).

The commands come from README.md itself: the ```sh block under "## Calling it" (grpcurl, pinned
in the Makefile, `go install`ed into .tools/bin) and the events block after it. Editing the README
changes what runs. What the README's comments claim is checked through CLAIMS (`support.readme`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The demo as test_demo starts it (free ports, its own Kafka).
from support.demo import start_demo
from support.readme import (
    GRPCURL,
    HOLD,
    REFUSAL,
    Claim,
    Demo,
    Step,
    assert_session_as_documented,
    logical_lines,
    readme_block,
    run,
    run_session,
)
from support.tools import ensure_tool

from local_stack.kafka import java_available

SECTION = "## Calling it"
# How long the events command may wait for a record before it gives up.
EVENTS_IDLE_TIMEOUT = "30"

# Installing grpcurl on a fresh machine, then a first demo start that downloads Kafka, take more
# than the default 300 s; with both at hand the module takes about 20 s.
pytestmark = pytest.mark.timeout(900)


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


def check_cancelled(_: re.Match[str], step: Step, __: Demo) -> None:
    assert step.json()["status"] == "PAYOUT_STATUS_CANCELLED", step.output


def check_quote(match: re.Match[str], step: Step, _: Demo) -> None:
    quote = step.json()
    assert (quote["amount"], quote["fee"], str(quote.get("sufficient", False)).lower()) == (
        match["amount"],
        match["fee"],
        match["sufficient"],
    ), step.output


def check_failed(match: re.Match[str], step: Step, _: Demo) -> None:
    payout = step.json()
    assert (payout["status"], payout["failure"]["code"], payout["revision"]) == (
        "PAYOUT_STATUS_FAILED",
        match["code"],
        match["revision"],
    ), step.output


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
    HOLD,
    Claim(re.compile(r"^reverts the confirmed payout$"), "previous", check_cancelled),
    REFUSAL,
    Claim(
        re.compile(
            r"^quoted amount (?P<amount>\d+), fee (?P<fee>\d+), sufficient (?P<sufficient>true|false)$"
        ),
        "previous",
        check_quote,
    ),
    Claim(
        re.compile(r"^failed (?P<code>PAYOUT_FAILURE_CODE_\w+), revision (?P<revision>\d+)$"),
        "previous",
        check_failed,
    ),
)
# One line of the events command's output as the README shows it: its sequence id and its change.
EVENT_LINE = re.compile(
    r'"sequence_id":"(?P<sequence_id>\d+)".*"(?P<kind>created|status_changed)":\{'
    r'(?:"status":"(?P<status>\w+)")?(?:,"details":"(?P<details>[^"]*)")?'
)


@pytest.fixture(scope="module")
def grpcurl() -> None:
    """The README's grpcurl in .tools/bin, from the Makefile's pinned `go install` when it is missing."""
    assert ensure_tool(GRPCURL.name) == GRPCURL


@pytest.fixture(scope="module")
def demo(grpcurl: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo from an empty data directory, on free ports (Kafka when a JDK is here)."""
    directory = tmp_path_factory.mktemp("readme-demo")
    process, address, kafka_port = start_demo(directory)
    yield Demo(process, address, f"127.0.0.1:{kafka_port}", directory / "demo")
    process.stop(signal.SIGINT, timeout=60)


@pytest.fixture(scope="module")
def session(demo: Demo) -> list[Step]:
    return run_session(SECTION, demo, CLAIMS)


def test_the_readme_grpcurl_session_runs_as_documented(session: list[Step], demo: Demo) -> None:
    assert_session_as_documented(session, CLAIMS, demo)


@pytest.mark.skipif(not java_available(), reason="no JDK here: the demo's Kafka cannot start")
def test_the_readme_events_commands_print_the_sessions_events(session: list[Step], demo: Demo) -> None:
    env = dict(os.environ)
    commands: list[tuple[int, str, list[re.Match[str]]]] = []
    for number, command, comment in logical_lines(*readme_block(SECTION, "payout-manager events")):
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
