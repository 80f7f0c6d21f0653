"""Known callers, roles and tenants (SPEC 5), over real mutual-TLS handshakes with `serve --workers 2`.

One stack for the module: PostgreSQL, a reference PartyManagement, Kafka and `serve` with a client
CA and a policy. Two parties, `party-1` and `party-2`, each with a funded shop; `party-2` has one
payout of each kind the refusals aim at. Every refusal is checked for its code and ErrorInfo, and
afterwards the books, the stored events and the topic are checked to hold nothing but what the
allowed calls made.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.books import event_sequences, payouts_whose_plans_disagree, unbalanced_currencies
from support.events import Stack, sequences
from support.payouts import cancel, confirm, create, refusal
from support.serving import StartServe, log_lines, run_serve

from local_stack.certificates import Authority, Issued
from payout_manager.proto.accounter.v1 import accounter_pb2 as accounter_pb
from payout_manager.proto.accounter.v1 import accounter_pb2_grpc
from payout_manager.proto.party_management.v1 import party_management_pb2 as party_pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2_grpc
from payout_manager_testing.world import Shop

PM = "payout_manager.v1.PayoutManagement"
ACCOUNTER = "accounter.v1.Accounter"
ANALYTICS_TOKEN = "analytics-token-9f3b2c"
FUNDS = 1_000_000

BACK_OFFICE = "spiffe://bank/back-office"
PAYOUTS_ONLY = "spiffe://bank/payouts-only"
TREASURY = "spiffe://bank/treasury"
OPS = "ops.bank.example"  # a certificate with a DNS SAN only
BATCH = "nightly-batch"  # a certificate with a subject CN only


def policy(*, back_office_parties: list[str]) -> dict[str, Any]:
    return {
        "roles": {
            "payouts": [f"{PM}/*"],
            "reader": [
                f"{PM}/GetPayout",
                f"{PM}/ListPayouts",
                f"{PM}/GetPayoutEvents",
                f"{ACCOUNTER}/GetAccount",
            ],
            "treasury": [f"{ACCOUNTER}/*"],
        },
        "principals": [
            {"id": BACK_OFFICE, "roles": ["payouts"], "parties": back_office_parties},
            {"id": PAYOUTS_ONLY, "roles": ["payouts"]},
            {"id": TREASURY, "roles": ["payouts", "treasury"]},
            {"id": OPS, "roles": ["reader"]},
            {"id": BATCH, "roles": ["reader"], "parties": ["party-2"]},
            {
                "id": "analytics",
                "token_sha256": hashlib.sha256(ANALYTICS_TOKEN.encode()).hexdigest(),
                "roles": ["reader"],
            },
        ],
    }


@dataclass
class Secured:
    stack: Stack
    ca: Authority
    policy_path: Path
    clients: dict[str, Issued]
    party_1: Shop
    party_2: Shop
    # party-2's payouts, by what they are for; and every payout an allowed call made.
    targets: dict[str, str]
    # party-2's settlement account once its payouts were made: (own_amount, min_available_amount).
    party_2_balance: tuple[int, int] = (0, 0)
    made: dict[str, int] = field(default_factory=dict)
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.stack.servers[0].address

    def channel(self, client: str | Issued | None, *, token: str | None = None) -> grpc.Channel:
        """A new channel (a new connection) presenting `client`'s certificate and, maybe, a token."""
        issued = self.clients[client] if isinstance(client, str) else client
        credentials = grpc.ssl_channel_credentials(
            self.ca.cert_pem,
            None if issued is None else issued.key_pem,
            None if issued is None else issued.cert_pem,
        )
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        channel = grpc.secure_channel(self.address, credentials)
        self._channels.append(channel)
        return channel

    def payouts(self, client: str | Issued | None, *, token: str | None = None) -> Any:
        return payout_manager_pb2_grpc.PayoutManagementStub(self.channel(client, token=token))

    def accounter(self, client: str | Issued | None, *, token: str | None = None) -> Any:
        return accounter_pb2_grpc.AccounterStub(self.channel(client, token=token))

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


def write_policy(path: Path, document: dict[str, Any]) -> None:
    # Written aside and renamed in, as an operator's deploy would: no worker reads half a file.
    aside = path.with_suffix(".new")
    aside.write_text(json.dumps(document))
    aside.replace(path)


@pytest.fixture(scope="module")
def secured(
    postgres_server_url: str, kafka: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    directory = tmp_path_factory.mktemp("access")
    ca = Authority()
    cert, key = ca.server().write(directory, "server")
    (directory / "clients-ca.crt").write_bytes(ca.cert_pem)
    clients = {
        name: ca.issue(name.rpartition("/")[2], uris=(name,))
        for name in (BACK_OFFICE, PAYOUTS_ONLY, TREASURY)
    }
    clients[OPS] = ca.issue("ops", dns=(OPS,))
    clients[BATCH] = ca.issue(BATCH)
    clients["stranger"] = ca.issue("stranger", uris=("spiffe://elsewhere/stranger",))
    policy_path = directory / "policy.json"
    write_policy(policy_path, policy(back_office_parties=["party-1"]))
    stack = Stack(postgres_server_url, kafka.bootstrap_servers, directory)
    treasury = clients[TREASURY]
    stack.serve(
        2,
        env={
            "PM_TLS_CERT_FILE": str(cert),
            "PM_TLS_KEY_FILE": str(key),
            "PM_TLS_CLIENT_CA_FILE": str(directory / "clients-ca.crt"),
            "PM_AUTH_POLICY_FILE": str(policy_path),
        },
        credentials=grpc.ssl_channel_credentials(ca.cert_pem, treasury.key_pem, treasury.cert_pem),
    )
    world = stack.world
    party_1 = world.add_shop(FUNDS, party_id="party-1")
    party_2 = world.add_shop(FUNDS, party_id="party-2")
    secured = Secured(stack, ca, policy_path, clients, party_1, party_2, {})
    as_treasury = secured.payouts(TREASURY)
    for purpose in ("get", "confirm", "cancel", "mark-paid"):
        payout = create(as_treasury, party_2.party_id, party_2.shop_id, 1_000, payout_id=f"party-2-{purpose}")
        secured.targets[purpose] = payout.payout_id
        secured.made[payout.payout_id] = 1
    account = world.balance(party_2.settlement)
    secured.party_2_balance = (account.own_amount, account.min_available_amount)
    try:
        yield secured
    finally:
        secured.close()
        stack.close()


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return refusal(error.value)


def unreachable(call: Callable[[], object]) -> grpc.StatusCode:
    """The code of a call that never got past the TLS handshake (there is no ErrorInfo to read)."""
    with pytest.raises(grpc.RpcError) as error:
        call()
    code: grpc.StatusCode = error.value.code()
    return code


def create_request(shop: Shop, payout_id: str, amount: int = 500) -> pb.CreatePayoutRequest:
    return pb.CreatePayoutRequest(
        payout_id=payout_id,
        party_id=shop.party_id,
        shop_id=shop.shop_id,
        cash=party_pb.Cash(amount=amount, currency="RUB"),
    )


def quote_request(shop: Shop, amount: int = 500) -> pb.QuotePayoutRequest:
    return pb.QuotePayoutRequest(
        party_id=shop.party_id, shop_id=shop.shop_id, cash=party_pb.Cash(amount=amount, currency="RUB")
    )


def hold_request(secured: Secured, plan_id: str) -> accounter_pb.HoldRequest:
    posting = accounter_pb.Posting(
        from_id=secured.party_2.settlement, to_id=secured.party_1.settlement, amount=1, currency="RUB"
    )
    return accounter_pb.HoldRequest(
        plan_id=plan_id, batch=accounter_pb.PostingBatch(id=1, postings=[posting])
    )


def test_a_handshake_without_a_good_client_certificate_fails_before_any_call(secured: Secured) -> None:
    request = create_request(secured.party_1, "refused-no-certificate")
    other_ca = Authority("another CA").issue("back-office", uris=(BACK_OFFICE,))
    expired = secured.ca.issue("back-office", uris=(BACK_OFFICE,), expired=True)

    for client in (None, other_ca, expired):
        stub = secured.payouts(client)
        assert unreachable(partial(stub.CreatePayout, request, timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_a_caller_the_policy_does_not_list_is_unauthenticated(secured: Secured) -> None:
    request = create_request(secured.party_1, "refused-stranger")

    assert refused(lambda: secured.payouts("stranger").CreatePayout(request)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNKNOWN_CALLER",
    )
    # A token the policy does not list is refused even beside a listed certificate.
    as_forger = secured.payouts(TREASURY, token="not-a-listed-token")
    assert refused(lambda: as_forger.CreatePayout(request)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNKNOWN_CALLER",
    )
    as_forger_accounter = secured.accounter(TREASURY, token="not-a-listed-token")
    assert refused(lambda: as_forger_accounter.Hold(hold_request(secured, "refused-forged-hold"))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNKNOWN_CALLER",
    )


def test_a_method_outside_the_callers_roles_is_denied(secured: Secured) -> None:
    as_reader = secured.payouts("stranger", token=ANALYTICS_TOKEN)
    as_ops = secured.payouts(OPS)
    payouts_only = secured.accounter(PAYOUTS_ONLY)
    target = secured.targets["confirm"]

    for stub in (as_reader, as_ops):
        assert refused(partial(stub.CreatePayout, create_request(secured.party_1, "refused-reader"))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "METHOD_NOT_ALLOWED",
        )
        assert refused(partial(stub.ConfirmPayout, pb.ConfirmPayoutRequest(payout_id=target))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "METHOD_NOT_ALLOWED",
        )
        # A quote writes nothing, yet it is no read the reader role names.
        assert refused(partial(stub.QuotePayout, quote_request(secured.party_1))) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "METHOD_NOT_ALLOWED",
        )
    assert refused(lambda: payouts_only.Hold(hold_request(secured, "refused-payouts-only-hold"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "METHOD_NOT_ALLOWED",
    )
    assert refused(lambda: payouts_only.CreateAccount(accounter_pb.CreateAccountRequest(currency="RUB"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "METHOD_NOT_ALLOWED",
    )
    # What their roles name, they reach: a reader reads, by token, by DNS SAN.
    assert as_reader.GetPayout(pb.GetPayoutRequest(payout_id=target)).payout_id == target
    assert as_ops.GetPayout(pb.GetPayoutRequest(payout_id=target)).payout_id == target


def test_a_principal_confined_to_party_1_finds_no_payout_of_party_2(secured: Secured) -> None:
    back_office = secured.payouts(BACK_OFFICE)
    not_found = (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")
    targets = secured.targets

    assert refused(lambda: back_office.GetPayout(pb.GetPayoutRequest(payout_id=targets["get"]))) == not_found
    assert (
        refused(lambda: back_office.GetPayout(pb.GetPayoutRequest(payout_id=targets["get"], revision=1)))
        == not_found
    )
    assert (
        refused(lambda: back_office.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=targets["get"])))
        == not_found
    )
    assert refused(lambda: confirm(back_office, targets["confirm"])) == not_found
    assert refused(lambda: cancel(back_office, targets["cancel"], "not mine")) == not_found
    assert (
        refused(lambda: back_office.MarkPayoutPaid(pb.MarkPayoutPaidRequest(payout_id=targets["mark-paid"])))
        == not_found
    )
    # Word for word what a payout that does not exist at all answers.
    nowhere = refused(lambda: back_office.GetPayout(pb.GetPayoutRequest(payout_id="no-such-payout")))
    assert nowhere == not_found
    assert refused(lambda: back_office.CreatePayout(create_request(secured.party_2, "refused-party-2"))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PARTY_NOT_ALLOWED",
    )
    assert refused(lambda: back_office.QuotePayout(quote_request(secured.party_2))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PARTY_NOT_ALLOWED",
    )
    assert back_office.QuotePayout(quote_request(secured.party_1)).sufficient
    assert (
        refused(
            lambda: back_office.FailPayout(
                pb.FailPayoutRequest(
                    payout_id=targets["confirm"],
                    failure=pb.PayoutFailure(code=pb.PAYOUT_FAILURE_CODE_DECLINED),
                )
            )
        )
        == not_found
    )

    own = create(back_office, secured.party_1.party_id, secured.party_1.shop_id, 700, payout_id="party-1-own")
    secured.made[own.payout_id] = 2
    assert confirm(back_office, own.payout_id).status == pb.PAYOUT_STATUS_CONFIRMED
    listed = back_office.ListPayouts(pb.ListPayoutsRequest(page_size=1000)).payouts
    assert {p.party_id for p in listed} == {"party-1"} and own.payout_id in {p.payout_id for p in listed}
    assert not back_office.ListPayouts(pb.ListPayoutsRequest(party_id="party-2")).payouts
    # BATCH, confined to party-2 and named by its CN, lists party-2 only.
    as_batch = secured.payouts(BATCH).ListPayouts(pb.ListPayoutsRequest(page_size=1000)).payouts
    assert {p.party_id for p in as_batch} == {"party-2"}


def test_the_refused_calls_changed_nothing(secured: Secured) -> None:
    # Run after the refusals above (pytest keeps file order): every payout stored is one an
    # allowed call made, with as many events as those calls made, and no plan the refused
    # calls named exists.
    database_url = secured.stack.database_url
    stored = event_sequences(database_url)
    assert stored == {payout_id: list(range(1, n + 1)) for payout_id, n in secured.made.items()}
    treasury = secured.accounter(TREASURY)
    for plan_id in ("refused-forged-hold", "refused-payouts-only-hold"):
        assert refused(partial(treasury.GetPlan, accounter_pb.GetPlanRequest(plan_id=plan_id))) == (
            grpc.StatusCode.NOT_FOUND,
            "PLAN_NOT_FOUND",
        )
    party_2 = treasury.GetAccount(accounter_pb.GetAccountRequest(account_id=secured.party_2.settlement))
    assert (party_2.own_amount, party_2.min_available_amount) == secured.party_2_balance
    records = secured.stack.published(secured.made)
    assert sequences(records) == stored


def test_health_is_open_and_reflection_needs_a_listed_caller(secured: Secured) -> None:
    stranger = secured.channel("stranger")
    health = health_pb2_grpc.HealthStub(stranger).Check(health_pb2.HealthCheckRequest(service=PM))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    def list_services(channel: grpc.Channel) -> list[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return [s.name for reply in replies for s in reply.list_services_response.service]

    assert refused(lambda: list_services(stranger)) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CALLER")
    assert PM in list_services(secured.channel(OPS))


def test_a_changed_policy_reaches_every_worker_and_a_bad_one_keeps_the_last_good(secured: Secured) -> None:
    target = secured.targets["get"]

    def back_office_sees_party_2() -> set[bool]:
        # Fresh channels, so fresh connections, spread by the kernel over both workers.
        seen = set()
        for _ in range(12):
            try:
                secured.payouts(BACK_OFFICE).GetPayout(pb.GetPayoutRequest(payout_id=target))
                seen.add(True)
            except grpc.RpcError as error:
                assert refusal(error) == (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")
                seen.add(False)
        return seen

    assert back_office_sees_party_2() == {False}
    try:
        write_policy(secured.policy_path, policy(back_office_parties=["party-1", "party-2"]))
        assert back_office_sees_party_2() == {True}

        aside = secured.policy_path.with_suffix(".bad")
        aside.write_text('{"roles": {}, "principals": [{"id": ')
        aside.replace(secured.policy_path)
        assert back_office_sees_party_2() == {True}
        server = secured.stack.servers[0]
        server.wait_for_log("kept the last good one")
        complaints = server.process.output().count("kept the last good one")
        assert 1 <= complaints <= 2, "one line per worker that read the bad file"
    finally:
        write_policy(secured.policy_path, policy(back_office_parties=["party-1"]))
    assert back_office_sees_party_2() == {False}


def random_calls(
    payouts: Any, accounter: Any, shop: Shop, payout_id: str, new_payout_id: str
) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Calls aimed at `shop`'s party and its payout `payout_id`, by method name, with their service."""
    return {
        "CreatePayout": (PM, lambda: payouts.CreatePayout(create_request(shop, new_payout_id, 1))),
        "QuotePayout": (PM, lambda: payouts.QuotePayout(quote_request(shop, 1))),
        "GetPayout": (PM, lambda: payouts.GetPayout(pb.GetPayoutRequest(payout_id=payout_id))),
        "GetPayoutEvents": (
            PM,
            lambda: payouts.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=payout_id)),
        ),
        "ListPayouts": (PM, lambda: payouts.ListPayouts(pb.ListPayoutsRequest(party_id=shop.party_id))),
        # Of a confirmed or cancelled payout: allowed, the answer is the payout or INVALID_PAYOUT_STATUS.
        "CancelPayout": (
            PM,
            lambda: payouts.CancelPayout(pb.CancelPayoutRequest(payout_id=payout_id, details="x")),
        ),
        "GetAccount": (
            ACCOUNTER,
            lambda: accounter.GetAccount(accounter_pb.GetAccountRequest(account_id=shop.settlement)),
        ),
        "GetPlan": (
            ACCOUNTER,
            lambda: accounter.GetPlan(accounter_pb.GetPlanRequest(plan_id=f"payout_{payout_id}")),
        ),
    }


PRINCIPAL_PARTIES: dict[str, set[str] | None] = {
    BACK_OFFICE: {"party-1"},
    PAYOUTS_ONLY: None,
    TREASURY: None,
    OPS: None,
    BATCH: {"party-2"},
    "analytics": None,
    "stranger": set(),
}
PRINCIPAL_METHODS: dict[str, set[str]] = {
    BACK_OFFICE: {"pm"},
    PAYOUTS_ONLY: {"pm"},
    TREASURY: {"pm", "accounter"},
    OPS: {"read"},
    BATCH: {"read"},
    "analytics": {"read"},
    "stranger": set(),
}
READS = {"GetPayout", "ListPayouts", "GetPayoutEvents", "GetAccount"}


def allowed_method(principal: str, service: str, method: str) -> bool:
    kinds = PRINCIPAL_METHODS[principal]
    if "read" in kinds and method in READS:
        return True
    return ("pm" in kinds and service == PM) or ("accounter" in kinds and service == ACCOUNTER)


def test_random_callers_methods_and_parties_get_the_policys_decision_and_never_internal(
    secured: Secured,
) -> None:
    """About 150 random calls: the code is always the one SPEC 5 gives for that caller, method and
    party; an allowed call's outcome is the method's own (OK, or a refusal of the payout rules)."""
    rng = random.Random(20261202)
    stubs = {
        name: (
            secured.payouts("stranger", token=ANALYTICS_TOKEN)
            if name == "analytics"
            else secured.payouts(name),
            secured.accounter("stranger", token=ANALYTICS_TOKEN)
            if name == "analytics"
            else secured.accounter(name),
        )
        for name in PRINCIPAL_PARTIES
    }
    shops = {"party-1": secured.party_1, "party-2": secured.party_2}
    seen: set[tuple[str, grpc.StatusCode]] = set()
    for number in range(150):
        principal = rng.choice(sorted(PRINCIPAL_PARTIES))
        party = rng.choice(sorted(shops))
        shop = shops[party]
        payouts, accounter = stubs[principal]
        payout_id = secured.targets["get"] if party == "party-2" else "party-1-own"
        calls = random_calls(payouts, accounter, shop, payout_id, f"random-{number}")
        method = rng.choice(sorted(calls))
        service, call = calls[method]
        parties = PRINCIPAL_PARTIES[principal]
        try:
            reply = call()
            code, reason = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, reason = refusal(error)
            reply = None
        seen.add((method, code))
        where = f"{principal} {method} {party}"
        if principal == "stranger":
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CALLER"), where
        elif not allowed_method(principal, service, method):
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"), where
        elif service == PM and parties is not None and party not in parties:
            if method in ("CreatePayout", "QuotePayout"):
                assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PARTY_NOT_ALLOWED"), where
            elif method == "ListPayouts":
                assert code == grpc.StatusCode.OK and not reply.payouts, where
            else:
                assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND"), where
        else:
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION), (where, code, reason)
            if code == grpc.StatusCode.OK and method == "CreatePayout":
                secured.made[reply.payout_id] = 1
            if code == grpc.StatusCode.OK and method == "CancelPayout":
                secured.made[payout_id] = reply.revision
    assert len(seen) >= 12, f"the draw reached too few outcomes: {sorted(seen)}"
    database_url = secured.stack.database_url
    assert unbalanced_currencies(database_url) == []
    assert payouts_whose_plans_disagree(database_url, sorted(secured.made)) == []
    assert event_sequences(database_url) == {p: list(range(1, n + 1)) for p, n in secured.made.items()}


def test_a_bad_policy_file_at_start_stops_serve_with_one_line(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"roles": {"payouts": [f"{PM}/CreatePayouts"]}, "principals": []}))

    run = run_serve({"PM_DATABASE_URL": database_url, "PM_AUTH_POLICY_FILE": str(path)}, "127.0.0.1:0")

    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert "PM_AUTH_POLICY_FILE is malformed" in run.stderr and "CreatePayouts" in run.stderr


def test_without_a_policy_serve_says_at_start_that_every_caller_is_anonymous(start_serve: StartServe) -> None:
    served = start_serve()

    served.wait_for_log("every caller is anonymous with every right")


def test_every_change_records_who_made_it_in_the_event_the_topic_and_the_log(secured: Secured) -> None:
    back_office = secured.payouts(BACK_OFFICE)
    made = create(back_office, secured.party_1.party_id, secured.party_1.shop_id, 300, payout_id="who-did-it")
    secured.made[made.payout_id] = 2
    treasury = secured.payouts(TREASURY)
    cancelled = cancel(treasury, made.payout_id, "treasury said no")

    assert (made.created_by, cancelled.created_by) == (BACK_OFFICE, BACK_OFFICE)
    events = back_office.GetPayoutEvents(pb.GetPayoutEventsRequest(payout_id=made.payout_id)).events
    assert [(e.sequence_id, e.initiator) for e in events] == [(1, BACK_OFFICE), (2, TREASURY)]
    assert all(e.payout.created_by == BACK_OFFICE for e in events)
    assert events[0].payout_change.created.payout.created_by == BACK_OFFICE
    records = secured.stack.published({made.payout_id: 2})
    published = [r.event for r in records if r.key == made.payout_id]
    assert list(published) == list(events)
    logged = log_lines(secured.stack.servers[0].process.output())
    callers = [
        (entry["method"].rpartition(".")[2], entry["caller"])
        for entry in logged
        if entry.get("payout_id") == made.payout_id and entry.get("code") == "OK"
    ]
    assert callers[:3] == [
        ("CreatePayout", BACK_OFFICE),
        ("CancelPayout", TREASURY),
        ("GetPayoutEvents", BACK_OFFICE),
    ]
