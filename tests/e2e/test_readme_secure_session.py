"""The README's "Calling it securely" session, run as written against `python -m local_stack --secure`.

The grpcurl commands (mutual TLS with the demo's certificates, a bearer token read from its file)
come from the ```sh block under "## Calling it securely"; their comments' claims are checked as in
the plain session (`support.readme`).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator

import pytest
from support.demo import start_demo
from support.readme import (
    GRPCURL,
    REFUSAL,
    Claim,
    Demo,
    Step,
    assert_session_as_documented,
    run_session,
)
from support.tools import ensure_tool

SECTION = "## Calling it securely"

pytestmark = pytest.mark.timeout(900)


def check_created_by(match: re.Match[str], step: Step, _: Demo) -> None:
    assert step.json()["created_by"] == match["who"], step.output


def check_initiators(match: re.Match[str], step: Step, _: Demo) -> None:
    initiators = [event["initiator"] for event in step.json()["events"]]
    assert initiators == match["who"].split(", "), step.output


CLAIMS = (
    Claim(re.compile(r"^created_by (?P<who>\S+)$"), "previous", check_created_by),
    Claim(re.compile(r"^initiators (?P<who>.+)$"), "previous", check_initiators),
    REFUSAL,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The secured demo from an empty data directory, on free ports."""
    assert ensure_tool(GRPCURL.name) == GRPCURL
    directory = tmp_path_factory.mktemp("readme-secure-demo")
    process, address, kafka_port = start_demo(directory, secure=True)
    yield Demo(process, address, f"127.0.0.1:{kafka_port}", directory / "demo")
    process.stop(signal.SIGINT, timeout=60)


def test_the_readme_secured_grpcurl_session_runs_as_documented(demo: Demo) -> None:
    session = run_session(SECTION, demo, CLAIMS)

    assert_session_as_documented(session, CLAIMS, demo)
    refusals = [match["reason"] for step in session for claim, match in step.claims if claim is REFUSAL]
    # grpcurl decodes ErrorInfo with reflection only, which refuses the caller of the last one.
    assert refusals == ["PARTY_NOT_ALLOWED", "METHOD_NOT_ALLOWED", None]
