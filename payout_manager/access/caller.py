"""The caller of one call, as the payout service sees it: who it is and which parties it may touch."""

from __future__ import annotations

from dataclasses import dataclass

# Every caller's identity when no policy is set (SPEC 5), and the prefix of the service's own jobs.
ANONYMOUS_ID = "anonymous"
JOB_PREFIX = "payout-manager:"


@dataclass(frozen=True)
class Caller:
    """`identity` is what the events record as the initiator; `parties` None means every party."""

    identity: str
    parties: frozenset[str] | None = None

    def may_touch(self, party_id: str) -> bool:
        return self.parties is None or party_id in self.parties


ANONYMOUS = Caller(ANONYMOUS_ID)


def job(name: str) -> Caller:
    """The service itself, doing `name` (expiry, ...): every party, recorded as payout-manager:NAME."""
    return Caller(JOB_PREFIX + name)
