"""The reference PartyManagement server as a real process, called through the payout manager's client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from clients.party_management.client import PartyManagementClient
from payout_manager.errors import Code, Reason, Refusal
from payout_manager.payouts.cash_flow import (
    AccountType,
    CashFlowAccount,
    CashFlowPosting,
    PayoutSums,
    sum_payout,
)
from payout_manager.proto.party_management.v1 import party_management_pb2, party_management_pb2_grpc
from payout_manager_testing.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
NOW = datetime(2025, 1, 1, tzinfo=UTC)
INT64_MAX = 2**63 - 1

SHOP_1 = {
    "shop_id": "shop-1",
    "currency": "RUB",
    "accounts": {"settlement": 1, "guarantee": 2, "payout": 3},
    "payout_tool_ids": ["tool-1", "tool-2"],
    "default_payout_tool_id": "tool-1",
}


def _shop(shop_id: str, **overrides: object) -> dict[str, object]:
    return {**SHOP_1, "shop_id": shop_id, **overrides}


def _term(source: str, destination: str, volume: dict[str, object], details: str) -> dict[str, object]:
    return {"source": source, "destination": destination, "volume": volume, "details": details}


PAYOUT_75 = _term("merchant.settlement", "merchant.payout", {"share": [3, 4]}, "payout")
FEE_25 = _term("merchant.settlement", "system.settlement", {"share": [1, 4]}, "fee")

# 10000 paid out as 7500 to the payout account and 2500 to the system: SPEC 1.1's example.
CONFIG: dict[str, Any] = {
    "system_accounts": {"RUB": {"settlement": 10, "subagent": 11}},
    "parties": [
        {
            "party_id": "party-1",
            "payout_terms": [PAYOUT_75, FEE_25],
            "shops": [
                SHOP_1,
                _shop("shop-blocked", blocked=True),
                _shop("shop-no-default-tool", default_payout_tool_id=None),
                _shop("shop-no-payouts", payout_terms=[]),
                _shop(
                    "shop-double",
                    payout_terms=[_term("merchant.settlement", "merchant.payout", {"share": [2, 1]}, "x2")],
                ),
            ],
        },
        {"party_id": "party-blocked", "blocked": True, "payout_terms": [PAYOUT_75], "shops": [SHOP_1]},
        {"party_id": "party-no-terms", "shops": [SHOP_1]},
    ],
}


def write_config(path: Path, document: object) -> None:
    """Replaces the file in one step, as an operator's deploy would: the server never reads half of it."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    os.replace(scratch, path)


def server_command(config_path: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from payout_manager.cli import main; main()",
        "party-management",
        "--config",
        str(config_path),
        "--address",
        f"127.0.0.1:{port}",
    ]


def server_environment() -> dict[str, str]:
    # The server must not pick up the developer's PM_* settings.
    return {name: value for name, value in os.environ.items() if not name.startswith("PM_")}


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    config_path: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()


def start_server(config_path: Path, port: int, log_path: Path) -> RunningServer:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(config_path, port),
            cwd=REPO_ROOT,
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return RunningServer(process, port, config_path, log_path)


def stop_server(server: RunningServer) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise


def wait_until_answers(server: RunningServer) -> None:
    with PartyManagementClient(server.address) as client:
        try:
            client.get_shop("party-1", "shop-1", deadline=time.monotonic() + START_TIMEOUT)
        except Refusal:
            pytest.fail(f"the server did not answer (exit code {server.process.poll()}):\n{server.log()}")


@contextmanager
def running_server(directory: Path, document: object) -> Iterator[RunningServer]:
    config_path = directory / "party-management.json"
    write_config(config_path, document)
    server = start_server(config_path, free_port(), directory / "server.log")
    try:
        wait_until_answers(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("party-management"), CONFIG) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[PartyManagementClient]:
    with PartyManagementClient(server.address) as client:
        yield client


def settlement(account_id: int) -> CashFlowAccount:
    return CashFlowAccount(AccountType.MERCHANT_SETTLEMENT, account_id)


# --- answers ---


def test_cash_flow_of_the_spec_example(client: PartyManagementClient) -> None:
    cash_flow = client.compute_payout_cash_flow("party-1", "shop-1", 10000, "RUB", "", NOW)

    assert cash_flow.payout_tool_id == "tool-1"
    assert cash_flow.postings == (
        CashFlowPosting(
            settlement(1), CashFlowAccount(AccountType.MERCHANT_PAYOUT, 3), 7500, "RUB", "payout"
        ),
        CashFlowPosting(
            settlement(1), CashFlowAccount(AccountType.SYSTEM_SETTLEMENT, 10), 2500, "RUB", "fee"
        ),
    )
    assert sum_payout(cash_flow.postings) == PayoutSums(amount=7500, fee=2500)


def test_cash_flow_for_a_chosen_payout_tool(client: PartyManagementClient) -> None:
    cash_flow = client.compute_payout_cash_flow("party-1", "shop-1", 4, "RUB", "tool-2", NOW)

    assert cash_flow.payout_tool_id == "tool-2"
    assert [posting.amount for posting in cash_flow.postings] == [3, 1]


def test_get_shop_returns_accounts_and_tools(client: PartyManagementClient) -> None:
    shop = client.get_shop("party-1", "shop-blocked")

    assert (shop.party_id, shop.shop_id, shop.currency, shop.blocked) == (
        "party-1",
        "shop-blocked",
        "RUB",
        True,
    )
    assert (shop.accounts.settlement, shop.accounts.guarantee, shop.accounts.payout) == (1, 2, 3)
    assert list(shop.payout_tool_ids) == ["tool-1", "tool-2"]
    assert shop.default_payout_tool_id == "tool-1"


# --- refusals, passed on with PartyManagement's reason ---


@pytest.mark.parametrize(
    ("party_id", "shop_id", "amount", "currency", "tool_id", "reason"),
    [
        ("party-9", "shop-1", 100, "RUB", "", Reason.PARTY_NOT_FOUND),
        ("party-1", "shop-9", 100, "RUB", "", Reason.SHOP_NOT_FOUND),
        ("party-1", "shop-1", 100, "RUB", "tool-9", Reason.PAYOUT_TOOL_NOT_FOUND),
        ("party-1", "shop-no-default-tool", 100, "RUB", "", Reason.PAYOUT_TOOL_NOT_FOUND),
        ("party-blocked", "shop-1", 100, "RUB", "", Reason.PARTY_BLOCKED),
        ("party-1", "shop-blocked", 100, "RUB", "", Reason.SHOP_BLOCKED),
        ("party-no-terms", "shop-1", 100, "RUB", "", Reason.PAYOUTS_NOT_PERMITTED),
        ("party-1", "shop-no-payouts", 100, "RUB", "", Reason.PAYOUTS_NOT_PERMITTED),
        ("party-1", "shop-1", 100, "USD", "", Reason.CURRENCY_MISMATCH),
        ("party-1", "shop-1", 0, "RUB", "", Reason.INVALID_REQUEST),
        ("party-1", "shop-double", INT64_MAX, "RUB", "", Reason.AMOUNT_OUT_OF_RANGE),
    ],
)
def test_refusal_is_passed_on_with_its_reason_and_not_retried(
    server: RunningServer,
    party_id: str,
    shop_id: str,
    amount: int,
    currency: str,
    tool_id: str,
    reason: Reason,
) -> None:
    retries: list[None] = []
    with (
        PartyManagementClient(server.address, on_retry=lambda: retries.append(None)) as client,
        pytest.raises(Refusal) as refused,
    ):
        client.compute_payout_cash_flow(party_id, shop_id, amount, currency, tool_id, NOW)

    assert refused.value.reason is reason
    assert refused.value.message
    assert retries == []


@pytest.mark.parametrize(
    ("party_id", "shop_id", "reason", "code"),
    [
        ("party-9", "shop-1", Reason.PARTY_NOT_FOUND, Code.NOT_FOUND),
        ("party-1", "shop-9", Reason.SHOP_NOT_FOUND, Code.NOT_FOUND),
    ],
)
def test_get_shop_of_an_unknown_shop_is_refused(
    client: PartyManagementClient, party_id: str, shop_id: str, reason: Reason, code: Code
) -> None:
    with pytest.raises(Refusal) as refused:
        client.get_shop(party_id, shop_id)

    assert (refused.value.reason, refused.value.code) == (reason, code)


# --- the config file, re-read while serving ---


def test_rewritten_config_is_served_and_a_broken_one_is_ignored(tmp_path: Path) -> None:
    with running_server(tmp_path, CONFIG) as server, PartyManagementClient(server.address) as client:
        blocked = json.loads(json.dumps(CONFIG))
        blocked["parties"][0]["shops"][0]["blocked"] = True
        write_config(server.config_path, blocked)
        with pytest.raises(Refusal) as refused:
            client.compute_payout_cash_flow("party-1", "shop-1", 100, "RUB", "", NOW)
        assert refused.value.reason is Reason.SHOP_BLOCKED

        server.config_path.write_text("{ not json")
        with pytest.raises(Refusal) as still_refused:
            client.compute_payout_cash_flow("party-1", "shop-1", 100, "RUB", "", NOW)
        assert still_refused.value.reason is Reason.SHOP_BLOCKED
        assert "not valid JSON" in server.log()

        cheaper = json.loads(json.dumps(CONFIG))
        cheaper["parties"][0]["payout_terms"][1]["volume"] = {"fixed": 7}
        server.config_path.write_text(json.dumps(cheaper))
        cash_flow = client.compute_payout_cash_flow("party-1", "shop-1", 100, "RUB", "", NOW)
        assert [posting.amount for posting in cash_flow.postings] == [75, 7]


def test_server_logs_its_port_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with running_server(tmp_path, CONFIG) as server:
        pass

    assert server.process.returncode == 0
    assert f"port {server.port}" in server.log()


def run_server_to_exit(config_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs the reference server on `config_path`, expecting it to refuse to start."""
    return subprocess.run(
        server_command(config_path, free_port()),
        cwd=REPO_ROOT,
        env=server_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            json.dumps(
                {
                    "parties": [
                        {
                            "party_id": "p",
                            "shops": [_shop("s", accounts={"settlement": "1", "guarantee": 2, "payout": 3})],
                        }
                    ]
                }
            ),
            "parties[0].shops[0].accounts.settlement: must be an integer",
        ),
        ("{", "not valid JSON"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    config_path = tmp_path / "bad.json"
    config_path.write_text(content)

    finished = run_server_to_exit(config_path)

    assert finished.returncode == 2
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith(f"payout-manager: party-management config {config_path}: ")
    assert problem in lines[0]


def test_missing_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config_path = tmp_path / "missing.json"

    finished = run_server_to_exit(config_path)

    assert finished.returncode == 2
    assert finished.stderr.splitlines() == [
        f"payout-manager: party-management config {config_path}: cannot read it: No such file or directory"
    ]


# --- retries within the caller's deadline ---


def test_unreachable_server_is_retried_until_the_deadline_then_refused() -> None:
    retries: list[None] = []
    with PartyManagementClient(f"127.0.0.1:{free_port()}", on_retry=lambda: retries.append(None)) as client:
        started = time.monotonic()
        with pytest.raises(Refusal) as refused:
            client.compute_payout_cash_flow("party-1", "shop-1", 100, "RUB", "", NOW, deadline=started + 1.0)
        elapsed = time.monotonic() - started

    assert refused.value.reason is Reason.PARTY_MANAGEMENT_UNAVAILABLE
    assert refused.value.code is Code.UNAVAILABLE
    assert 0.5 < elapsed < 2.5
    assert len(retries) > 1


def test_server_that_starts_during_the_retries_is_reached(tmp_path: Path) -> None:
    config_path = tmp_path / "party-management.json"
    write_config(config_path, CONFIG)
    port = free_port()
    started_servers: list[RunningServer] = []
    starter = threading.Timer(
        0.5, lambda: started_servers.append(start_server(config_path, port, tmp_path / "server.log"))
    )
    retries: list[None] = []
    try:
        with PartyManagementClient(f"127.0.0.1:{port}", on_retry=lambda: retries.append(None)) as client:
            started = time.monotonic()
            starter.start()
            cash_flow = client.compute_payout_cash_flow(
                "party-1", "shop-1", 10000, "RUB", "", NOW, deadline=started + 10.0
            )
            elapsed = time.monotonic() - started
    finally:
        starter.join()
        for server in started_servers:
            stop_server(server)

    assert [posting.amount for posting in cash_flow.postings] == [7500, 2500]
    assert len(retries) >= 1
    assert 0.5 < elapsed < 10.0


# --- a misbehaving PartyManagement: whatever it does, the caller gets a Refusal ---


Answer = Callable[[grpc.ServicerContext], party_management_pb2.ComputePayoutCashFlowResponse]


class MisbehavingPartyManagement(party_management_pb2_grpc.PartyManagementServicer):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def GetShop(  # noqa: N802 - the RPC's name
        self, request: party_management_pb2.GetShopRequest, context: grpc.ServicerContext
    ) -> party_management_pb2.Shop:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")

    def ComputePayoutCashFlow(  # noqa: N802 - the RPC's name
        self, request: party_management_pb2.ComputePayoutCashFlowRequest, context: grpc.ServicerContext
    ) -> party_management_pb2.ComputePayoutCashFlowResponse:
        return self.answer(context)


@contextmanager
def misbehaving_server(answer: Answer) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    party_management_pb2_grpc.add_PartyManagementServicer_to_server(
        MisbehavingPartyManagement(answer), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _posting(source_type: party_management_pb2.AccountType.ValueType) -> party_management_pb2.CashFlowPosting:
    return party_management_pb2.CashFlowPosting(
        source=party_management_pb2.CashFlowAccount(type=source_type, account_id=1),
        destination=party_management_pb2.CashFlowAccount(
            type=party_management_pb2.ACCOUNT_TYPE_MERCHANT_PAYOUT, account_id=3
        ),
        volume=party_management_pb2.Cash(amount=100, currency="RUB"),
    )


def _respond(*postings: party_management_pb2.CashFlowPosting) -> Answer:
    return lambda _context: party_management_pb2.ComputePayoutCashFlowResponse(postings=postings)


def _refuse(code: grpc.StatusCode, reason: str | None) -> Answer:
    def answer(context: grpc.ServicerContext) -> party_management_pb2.ComputePayoutCashFlowResponse:
        details = []
        if reason is not None:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="party-management"))
            details.append(detail)
        status = status_pb2.Status(code=code.value[0], message="refused", details=details)
        context.abort_with_status(rpc_status.to_status(status))

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            _respond(_posting(party_management_pb2.ACCOUNT_TYPE_UNSPECIFIED)), id="unspecified-account"
        ),
        pytest.param(
            _respond(_posting(party_management_pb2.AccountType.ValueType(99))), id="unknown-account-type"
        ),
        pytest.param(_respond(party_management_pb2.CashFlowPosting()), id="empty-posting"),
        pytest.param(_refuse(grpc.StatusCode.INTERNAL, None), id="internal"),
        pytest.param(_refuse(grpc.StatusCode.NOT_FOUND, None), id="not-found-without-reason"),
        pytest.param(_refuse(grpc.StatusCode.NOT_FOUND, "MOON_NOT_FOUND"), id="unknown-reason"),
        pytest.param(_refuse(grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND"), id="reason-not-passed-on"),
        pytest.param(_refuse(grpc.StatusCode.PERMISSION_DENIED, "PARTY_BLOCKED"), id="other-code"),
    ],
)
def test_misbehaving_party_management_is_unavailable(answer: Answer) -> None:
    with (
        misbehaving_server(answer) as address,
        PartyManagementClient(address) as client,
        pytest.raises(Refusal) as refused,
    ):
        client.compute_payout_cash_flow("party-1", "shop-1", 100, "RUB", "", NOW)

    assert refused.value.reason is Reason.PARTY_MANAGEMENT_UNAVAILABLE


def test_silent_server_is_retried_per_call_timeout_until_the_deadline() -> None:
    released = threading.Event()

    def hang(_context: grpc.ServicerContext) -> party_management_pb2.ComputePayoutCashFlowResponse:
        released.wait(10)
        return party_management_pb2.ComputePayoutCashFlowResponse()

    retries: list[None] = []
    try:
        with (
            misbehaving_server(hang) as address,
            PartyManagementClient(address, call_timeout=0.2, on_retry=lambda: retries.append(None)) as client,
        ):
            started = time.monotonic()
            with pytest.raises(Refusal) as refused:
                client.compute_payout_cash_flow(
                    "party-1", "shop-1", 100, "RUB", "", NOW, deadline=started + 1.0
                )
            elapsed = time.monotonic() - started
            released.set()
    finally:
        released.set()

    assert refused.value.reason is Reason.PARTY_MANAGEMENT_UNAVAILABLE
    assert "DEADLINE_EXCEEDED" in refused.value.message
    assert len(retries) >= 2
    assert elapsed < 2.5
