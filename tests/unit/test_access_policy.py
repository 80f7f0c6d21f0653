"""The policy file's rules (SPEC 5): what it accepts, what it refuses, and every decision it makes.

The property test draws random policies and calls, and compares each decision with an oracle
written here from SPEC 5's words alone (glob-free prefix matching of `Service/*`, tokens by
SHA-256, parties only confining), not with the policy module's own expansion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payout_manager.access.caller import Caller
from payout_manager.access.policy import Policy, PolicyError, PolicyFile
from payout_manager.errors import Code, Reason, Refusal

METHODS = (
    "payout_manager.v1.PayoutManagement/CreatePayout",
    "payout_manager.v1.PayoutManagement/GetPayout",
    "payout_manager.v1.PayoutManagement/ListPayouts",
    "accounter.v1.Accounter/Hold",
    "accounter.v1.Accounter/GetAccount",
)
TOKEN = "s3cr3t-token"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


SPEC_EXAMPLE: dict[str, Any] = {
    "roles": {
        "payouts": ["payout_manager.v1.PayoutManagement/*"],
        "reader": ["payout_manager.v1.PayoutManagement/GetPayout", "accounter.v1.Accounter/GetAccount"],
        "treasury": ["accounter.v1.Accounter/*"],
    },
    "principals": [
        {"id": "spiffe://bank/back-office", "roles": ["payouts"], "parties": ["party-1", "party-2"]},
        {"id": "analytics", "token_sha256": sha256(TOKEN), "roles": ["reader"]},
        {"id": "spiffe://bank/treasury", "roles": ["payouts", "treasury"]},
    ],
}


def parse(document: object) -> Policy:
    return Policy.parse(json.dumps(document), METHODS)


def refusal_of(
    policy: Policy, method: str, *, identity: str | None = None, token: str | None = None
) -> Reason:
    with pytest.raises(Refusal) as refused:
        policy.decide(method, certificate_identity=identity, token=token)
    return refused.value.reason


def test_the_spec_example_decides_as_the_spec_says() -> None:
    policy = parse(SPEC_EXAMPLE)
    create, hold = METHODS[0], METHODS[3]

    back_office = policy.decide(create, certificate_identity="spiffe://bank/back-office", token=None)
    assert back_office == Caller("spiffe://bank/back-office", frozenset({"party-1", "party-2"}))
    assert refusal_of(policy, hold, identity="spiffe://bank/back-office") is Reason.METHOD_NOT_ALLOWED
    assert policy.decide(hold, certificate_identity="spiffe://bank/treasury", token=None).parties is None
    # The token names its principal, whatever certificate comes with it.
    reader = policy.decide(METHODS[1], certificate_identity="spiffe://bank/treasury", token=TOKEN)
    assert reader == Caller("analytics")
    assert refusal_of(policy, create, token=TOKEN) is Reason.METHOD_NOT_ALLOWED
    assert refusal_of(policy, METHODS[1], token="not-the-token") is Reason.UNKNOWN_CALLER
    assert refusal_of(policy, METHODS[1], identity="spiffe://bank/back-office", token="x") is (
        Reason.UNKNOWN_CALLER
    )
    assert refusal_of(policy, METHODS[1]) is Reason.UNKNOWN_CALLER
    assert refusal_of(policy, METHODS[1], identity="spiffe://bank/stranger") is Reason.UNKNOWN_CALLER


def test_refusals_carry_the_codes_of_spec_5() -> None:
    policy = parse(SPEC_EXAMPLE)
    with pytest.raises(Refusal) as unknown:
        policy.decide(METHODS[0], certificate_identity=None, token=None)
    with pytest.raises(Refusal) as denied:
        policy.decide(METHODS[3], certificate_identity="spiffe://bank/back-office", token=None)
    assert (unknown.value.code, denied.value.code) == (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)


def test_no_refusal_repeats_the_token() -> None:
    policy = parse(SPEC_EXAMPLE)
    with pytest.raises(Refusal) as refused:
        policy.decide(METHODS[0], certificate_identity=None, token="a-token-nobody-knows")
    assert "a-token-nobody-knows" not in str(refused.value)


def spoiled(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(SPEC_EXAMPLE))
    for path, value in changes.items():
        target: Any = document
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ([], "the policy must be a JSON object"),
        ({"roles": {}}, "the policy lacks 'principals'"),
        (spoiled(principal=[]), "unknown key 'principal'"),
        (spoiled(roles__reader=["payout_manager.v1.PayoutManagement/GetPayouts"]), "names no method"),
        (spoiled(roles__reader=["*"]), "is not 'package.Service/Method'"),
        (spoiled(roles__reader="accounter.v1.Accounter/*"), "roles.reader must be a list"),
        (spoiled(principals__0__roles=["payout"]), "names 'payout', which is not a role"),
        (spoiled(principals__1__id="spiffe://bank/back-office"), "is listed twice"),
        (spoiled(principals__1__id="anonymous"), "is reserved"),
        (spoiled(principals__1__id="payout-manager:expiry"), "is reserved"),
        (spoiled(principals__1__token_sha256="abc"), "must be 64 hex digits"),
        (spoiled(principals__2__token_sha256=sha256(TOKEN)), "another principal's too"),
        (spoiled(principals__0__parties="party-1"), "parties must be a list"),
        (spoiled(principals__0__role=["payouts"]), "unknown key 'role'"),
    ],
)
def test_a_bad_policy_is_refused_with_one_line_saying_where(document: object, says: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse(document)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_not_json_is_refused_in_one_line() -> None:
    with pytest.raises(PolicyError, match="not JSON") as refused:
        Policy.parse('{"roles": ', METHODS)
    assert "\n" not in str(refused.value)


def test_the_file_is_reread_when_it_changes_and_a_bad_one_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(SPEC_EXAMPLE))
    policy_file = PolicyFile(path, METHODS)
    analytics = {"certificate_identity": None, "token": TOKEN}
    assert policy_file.current().decide(METHODS[1], **analytics) == Caller("analytics")

    path.write_text(json.dumps(spoiled(principals__1__roles=["treasury"])))
    assert policy_file.current().decide(METHODS[3], **analytics) == Caller("analytics")
    with pytest.raises(Refusal):
        policy_file.current().decide(METHODS[1], **analytics)

    with caplog.at_level(logging.ERROR):
        path.write_text('{"roles": {}, "principals": [')
        for _ in range(3):
            kept = policy_file.current()
    assert kept.decide(METHODS[3], **analytics) == Caller("analytics")
    complaints = [r for r in caplog.records if "kept the last good one" in r.getMessage()]
    assert len(complaints) == 1

    path.unlink()
    assert policy_file.current().decide(METHODS[3], **analytics) == Caller("analytics")


# The oracle: SPEC 5 read literally.
def oracle(document: dict[str, Any], method: str, identity: str | None, token: str | None) -> object:
    def matches(pattern: str) -> bool:
        service, _, name = pattern.partition("/")
        return pattern == method or (name == "*" and method.partition("/")[0] == service)

    principals = document["principals"]
    if token is not None:
        found = [p for p in principals if p.get("token_sha256") == sha256(token)]
    else:
        found = [p for p in principals if identity is not None and p["id"] == identity]
    if not found:
        return Reason.UNKNOWN_CALLER
    principal = found[0]
    if not any(matches(pattern) for role in principal["roles"] for pattern in document["roles"][role]):
        return Reason.METHOD_NOT_ALLOWED
    parties = principal.get("parties")
    return Caller(principal["id"], None if parties is None else frozenset(parties))


ROLE_NAMES = ("a", "b", "c")
IDS = ("spiffe://x/one", "two.example", "three")
TOKENS = ("t1", "t2", "t3")
patterns = st.sampled_from([*METHODS, "payout_manager.v1.PayoutManagement/*", "accounter.v1.Accounter/*"])


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    roles = {name: draw(st.lists(patterns, min_size=1, max_size=3)) for name in ROLE_NAMES}
    principals = []
    for index in draw(st.lists(st.sampled_from(range(3)), unique=True)):
        principal: dict[str, Any] = {
            "id": IDS[index],
            "roles": draw(st.lists(st.sampled_from(ROLE_NAMES), max_size=2, unique=True)),
        }
        if draw(st.booleans()):
            principal["token_sha256"] = sha256(TOKENS[index])
        if draw(st.booleans()):
            principal["parties"] = draw(st.lists(st.sampled_from(["party-1", "party-2"]), unique=True))
        principals.append(principal)
    return {"roles": roles, "principals": principals}


@given(
    policies(),
    st.sampled_from(METHODS),
    st.none() | st.sampled_from([*IDS, "stranger"]),
    st.none() | st.sampled_from([*TOKENS, "forged"]),
)
def test_every_decision_is_the_policys(
    document: dict[str, Any], method: str, identity: str | None, token: str | None
) -> None:
    expected = oracle(document, method, identity, token)
    try:
        decided: object = parse(document).decide(method, certificate_identity=identity, token=token)
    except Refusal as refusal:
        decided = refusal.reason
    assert decided == expected
