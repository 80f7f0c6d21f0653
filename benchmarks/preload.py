"""Payouts of the past, stored in bulk: a large database to measure the reads and the writes on.

`preload(database_url, config_path, shops, n)` stores `n` payouts in one transaction of
server-side SQL (INSERT ... SELECT over generate_series), not through the API, as the service
would have stored them over the `PERIOD` before the stack's first payout:

- spread over the stack's shops (party-K/shop-K), each payout's cash flow as the stack's terms
  compute it (`clients.party_management.terms`) for one of `AMOUNTS`, with the shop's real
  accounts and the shared system settlement account that the fee goes to;
- a mix of histories (`SHAPES`: mostly confirmed, some cancelled, some unpaid), each walked
  through the payout model's transitions, with the posting plans, plan nets, postings, balance
  history rows and account slots that those transitions leave, so the books audit holds;
- every event stored, its payload the serialized `payout_manager.v1.Event`: the parts that vary
  by payout (ids, timestamps) are encoded in SQL, the rest are serialized once in Python by the
  service's codec, and they are concatenated in field order, as the codec's own output is.

Preloaded payouts are history: their ids start with `PREFIX`, and their events are not in the
outbox (never published); `Preloaded.events` is the range of their event row ids, which the topic
audit and the benchmark's drain leave out.

The stack's accounts, their funding and its history are dated back to before the period, so
that every balance in the past is one the accounts had. Balance history written after the
period (by scenarios run before the preload) is moved up by what the preloaded payouts changed.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from google.protobuf.message import Message
from sqlalchemy import Connection, text

from benchmarks.stack import CURRENCY
from clients.party_management import config as party_config
from clients.party_management.terms import compute_postings
from payout_manager.access.caller import ANONYMOUS_ID
from payout_manager.accounting.rules import PlanStatus, Posting, net_by_account
from payout_manager.events.codec import STATUS_FROM_PROTO, event_to_proto, payout_to_proto
from payout_manager.payouts import model
from payout_manager.payouts.cash_flow import settlement_accounts, sum_payout
from payout_manager.payouts.model import Accounting, Payout, PayoutEvent, PayoutStatus
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb
from payout_manager.storage.database import Database, create_database_engine
from payout_manager.storage.ledger import Ledger
from payout_manager.storage.payouts import Payouts, posting_to_json
from payout_manager.storage.tables import metadata

PREFIX = "preload-"
PERIOD = timedelta(days=90)
# The stack's setup (accounts, funding) is dated this long before the preloaded period starts.
SETUP_BEFORE = timedelta(days=1)
# The longest a preloaded payout waits for each change of status.
MAX_DELAY = timedelta(days=3)
# What each payout asks for, in minor units: 100.00 to 70 000.00 RUB.
AMOUNTS = tuple(m * 10**e for e in (4, 5, 6) for m in (1, 2, 3, 5, 7))
CANCEL_DETAILS = "returned by the bank"
# The plaintext benchmark's calls are made by no one in particular, as are these.
INITIATOR = ANONYMOUS_ID
# Each payout's statuses after UNPAID, and how many in 1000 payouts go that way.
SHAPES: tuple[tuple[tuple[PayoutStatus, ...], int], ...] = (
    ((PayoutStatus.CONFIRMED,), 780),
    ((PayoutStatus.PAID, PayoutStatus.CONFIRMED), 60),
    ((PayoutStatus.CANCELLED,), 70),
    ((PayoutStatus.PAID, PayoutStatus.CANCELLED), 10),
    ((PayoutStatus.CONFIRMED, PayoutStatus.CANCELLED), 10),
    ((), 50),
    ((PayoutStatus.PAID,), 20),
)
# Every table the preload writes, for ANALYZE and the sizes printed.
TABLES = (
    "payout",
    "payout_event",
    "posting_plan",
    "posting",
    "posting_plan_account",
    "account_balance",
    "account_slot",
)
# The payouts read back through the service's storage and codec after the preload.
SAMPLE = 50
# What a plan becomes by each accounting of a transition (the ledger's commit and rollback).
_FINISHED = {Accounting.COMMIT: PlanStatus.COMMITTED, Accounting.ROLLBACK: PlanStatus.ROLLED_BACK}
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The Payout's and the Event's fields, in field order, as the preload builds them: one group at
# a time, either encoded in SQL (the ones that vary by payout) or serialized once in Python.
_PAYOUT_GROUPS = (
    ("payout_id",),  # SQL
    ("created_at",),  # SQL
    ("updated_at",),  # SQL
    ("party_id", "shop_id"),  # per shop
    ("status",),  # per revision of each shape
    ("cash_flow", "payout_tool_id", "amount", "fee", "currency"),  # per shop and amount
    ("cancel_details", "revision", "metadata", "created_by", "failure"),  # per revision of each shape
)
_EVENT_GROUPS = (
    ("event_id",),  # SQL
    ("payout_id",),  # SQL
    ("sequence_id",),  # per revision
    ("created_at",),  # SQL
    ("payout_change",),  # SQL for the created event (it holds the snapshot), else per revision
    ("payout",),  # SQL
    ("initiator",),  # per revision
)


@dataclass(frozen=True)
class Preloaded:
    payouts: int
    # The row ids of the preloaded events: first, last (inclusive).
    events: tuple[int, int]
    # The preloaded period: every preloaded payout, change and balance is inside it.
    start: datetime
    end: datetime
    # By status, from the payout rows.
    statuses: dict[str, int]
    load_seconds: float
    vacuum_seconds: float
    checkpoint_seconds: float
    # Table name -> bytes with its indexes and TOAST.
    sizes: dict[str, int]
    # Seconds of each step of the load.
    steps: dict[str, float]

    @property
    def event_count(self) -> int:
        return self.events[1] - self.events[0] + 1 if self.events[1] >= self.events[0] else 0


def _check_field_groups() -> None:
    """The groups above name every field, in field order: a field added to the contract fails here."""
    checked: tuple[tuple[type[Message], tuple[tuple[str, ...], ...]], ...] = (
        (pb.Payout, _PAYOUT_GROUPS),
        (pb.Event, _EVENT_GROUPS),
    )
    for message, groups in checked:
        by_number = message.DESCRIPTOR.fields_by_number
        fields = [by_number[number].name for number in sorted(by_number)]
        if fields != [name for group in groups for name in group]:
            raise AssertionError(f"{message.DESCRIPTOR.full_name} has fields {fields}: update the preload")


def _only(message: Message, names: Collection[str]) -> bytes:
    """The serialized `message` with only the fields `names`: a run of its serialization."""
    part = type(message)()
    part.CopyFrom(message)
    for field in part.DESCRIPTOR.fields:
        if field.name not in names:
            part.ClearField(field.name)
    return part.SerializeToString(deterministic=True)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _tags() -> dict[str, bytes]:
    """The key (field number, wire type 2) of each length-delimited field the SQL encodes, as
    the parameter `Message_field` of _EVENTS."""
    fields: list[tuple[type[Message], tuple[str, ...]]] = [
        (pb.Payout, ("payout_id", "created_at", "updated_at")),
        (pb.Event, ("event_id", "payout_id", "created_at", "payout_change", "payout")),
        (pb.PayoutChange, ("created",)),
        (pb.PayoutCreated, ("payout",)),
    ]
    tags = {}
    for message, names in fields:
        for name in names:
            key = message.DESCRIPTOR.fields_by_name[name].number << 3 | 2
            assert key < 128
            tags[f"{message.DESCRIPTOR.name}_{name}"] = bytes([key])
    return tags


# protobuf's base-128 varint of a bigint below 2**56, as one expression (so PostgreSQL inlines
# the function): n bytes, low 7 bits first, each but the last with its high bit set, packed into
# a bigint and cut from int8send's 8 big-endian bytes. NULL beyond: the NOT NULL payload refuses it.
# PostgreSQL's bit operators share one precedence, left to right: every step is parenthesized.
def _varint_sql(v: str) -> str:
    branches = []
    for n in range(1, 9):
        parts = [
            f"(((({v} >> {7 * i}) & 127) | {128 if i < n - 1 else 0}) << {8 * (n - 1 - i)})" for i in range(n)
        ]
        branches.append(
            f"WHEN {v} < {2 ** (7 * n)} THEN substring(int8send({' | '.join(parts)}) FROM {9 - n})"
        )
    return f"CASE WHEN {v} < 0 THEN NULL {' '.join(branches)} END"


_FUNCTIONS = (
    f"""
    CREATE FUNCTION pg_temp.pm_pb_varint(v bigint) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT {_varint_sql("v")} $$
    """,
    # A length-delimited field's value: its length, then its bytes.
    """
    CREATE FUNCTION pg_temp.pm_pb_len(b bytea) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$ BEGIN RETURN pg_temp.pm_pb_varint(length(b)) || b; END $$
    """,
    # A google.protobuf.Timestamp of microseconds since the epoch (seconds 1, nanos 2; nanos 0 unset).
    """
    CREATE FUNCTION pg_temp.pm_pb_timestamp(us bigint) RETURNS bytea
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$ BEGIN
    RETURN '\\x08'::bytea || pg_temp.pm_pb_varint(us / 1000000)
        || CASE WHEN mod(us, 1000000) = 0 THEN ''::bytea
           ELSE '\\x10'::bytea || pg_temp.pm_pb_varint(mod(us, 1000000) * 1000) END;
    END $$
    """,
    """
    CREATE FUNCTION pg_temp.pm_moment(us bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT timestamptz '1970-01-01 00:00:00+00' + us * interval '1 microsecond'
    $$
    """,
    # A deterministic draw in [0, m) for payout n: the n-th of the stream `seed`.
    """
    CREATE FUNCTION pg_temp.pm_draw(n bigint, seed bigint, m bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT mod(hashint8extended(n, seed) & 9223372036854775807, m)
    $$
    """,
)

_TEMP_TABLES = """
CREATE TEMP TABLE pl_shop (
    shop_no int PRIMARY KEY, party_id text NOT NULL, shop_id text NOT NULL, segment bytea NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE pl_flow (
    shop_no int, amount_no int, requested_amount bigint NOT NULL, payout_tool_id text NOT NULL,
    amount bigint NOT NULL, fee bigint NOT NULL, cash_flow jsonb NOT NULL, segment bytea NOT NULL,
    PRIMARY KEY (shop_no, amount_no)
) ON COMMIT DROP;
CREATE TEMP TABLE pl_flow_posting (
    shop_no int, amount_no int, position int, from_id bigint NOT NULL, to_id bigint NOT NULL,
    amount bigint NOT NULL, currency text NOT NULL, description text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE pl_flow_net (
    shop_no int, amount_no int, account_id bigint NOT NULL, net bigint NOT NULL, checked boolean NOT NULL
) ON COMMIT DROP;
-- Each shape: its share of payouts (draws in [low, high) of 1000), its revisions, its final
-- status, the plan's final status and the revisions that finish the plan and make the revert.
CREATE TEMP TABLE pl_shape (
    shape int PRIMARY KEY, low int NOT NULL, high int NOT NULL, revisions int NOT NULL,
    status text NOT NULL, cancel_details text NOT NULL, plan_status text NOT NULL,
    finish_revision int, finish_commits boolean NOT NULL, revert_revision int
) ON COMMIT DROP;
-- Each revision of each shape: the snapshot's and the event's parts that depend only on it.
CREATE TEMP TABLE pl_step (
    shape int, revision int, status_segment bytea NOT NULL, tail_segment bytea NOT NULL,
    sequence_segment bytea NOT NULL, change_segment bytea, initiator_segment bytea NOT NULL,
    PRIMARY KEY (shape, revision)
) ON COMMIT DROP;
"""

# The stack's state before the period: setup (accounts, funding) and whatever ran since.
_BOUNDARY = """
SELECT coalesce((SELECT min(created_at) FROM payout), clock_timestamp()) AS boundary,
       (SELECT coalesce(max(id), 0) FROM payout_event) AS last_event,
       (SELECT count(*) FROM payout WHERE starts_with(payout_id, %(prefix)s)) AS preloaded
"""

# Setup moves to before the period: everything stamped before the first payout.
_BACKDATE = """
UPDATE account SET created_at = created_at - %(shift)s WHERE created_at < %(boundary)s;
UPDATE account_balance SET at = at - %(shift)s WHERE at < %(boundary)s;
UPDATE posting_plan SET created_at = created_at - %(shift)s, updated_at = updated_at - %(shift)s
WHERE created_at < %(boundary)s;
"""

# Each payout: its shop, amount and shape, drawn from its number, and the moment (microseconds
# since the epoch) of each of its revisions: created in the period, in the order of the numbers
# (payout n in the n-th of n equal parts of it, so that rows are stored in the order they were
# made, as a live table's are), each change after the last, by at most MAX_DELAY and at most
# half-way to the period's end.
_PAYOUTS = """
CREATE TEMP TABLE pl_payout ON COMMIT DROP AS
SELECT d.n, %(prefix)s || lpad(d.n::text, %(digits)s, '0') AS payout_id, d.shop_no, d.amount_no,
       s.shape, s.revisions, ARRAY[t1, t2, t3, t4] AS t
FROM (
    SELECT n, pg_temp.pm_draw(n, 1, %(shops)s) AS shop_no, pg_temp.pm_draw(n, 2, %(amounts)s) AS amount_no,
           pg_temp.pm_draw(n, 3, 1000) AS bucket,
           %(start)s + (n - 1) * %(step)s + pg_temp.pm_draw(n, 4, %(step)s) AS t1
    FROM generate_series(1, %(n)s::bigint) AS n
) d
JOIN pl_shape s ON d.bucket >= s.low AND d.bucket < s.high
CROSS JOIN LATERAL (SELECT t1 + least(1 + pg_temp.pm_draw(n, 5, %(delay)s), (%(end)s - t1) / 2) AS t2) a
CROSS JOIN LATERAL (SELECT t2 + least(1 + pg_temp.pm_draw(n, 6, %(delay)s), (%(end)s - t2) / 2) AS t3) b
CROSS JOIN LATERAL (SELECT t3 + least(1 + pg_temp.pm_draw(n, 7, %(delay)s), (%(end)s - t3) / 2) AS t4) c
ORDER BY d.n;
ANALYZE pl_payout;
"""

_INSERT_PAYOUTS = """
INSERT INTO payout (payout_id, party_id, shop_id, status, created_at, updated_at, requested_amount,
                    requested_payout_tool_id, payout_tool_id, amount, fee, currency, cash_flow,
                    metadata, cancel_details, revision, created_by)
SELECT p.payout_id, s.party_id, s.shop_id, h.status, pg_temp.pm_moment(p.t[1]),
       pg_temp.pm_moment(p.t[p.revisions]), f.requested_amount, '', f.payout_tool_id, f.amount, f.fee,
       %(currency)s, f.cash_flow, '{}'::jsonb, h.cancel_details, p.revisions, %(initiator)s
FROM pl_payout p
JOIN pl_shop s USING (shop_no)
JOIN pl_flow f USING (shop_no, amount_no)
JOIN pl_shape h USING (shape)
ORDER BY p.n;

-- The service limit's count of each shop's UNPAID and PAID payouts, as the creates keep it.
INSERT INTO shop_unresolved_payouts AS u (party_id, shop_id, unresolved)
SELECT s.party_id, s.shop_id, count(*)
FROM pl_payout p JOIN pl_shop s USING (shop_no) JOIN pl_shape h USING (shape)
WHERE h.status IN ('UNPAID', 'PAID')
GROUP BY s.party_id, s.shop_id
ON CONFLICT (party_id, shop_id) DO UPDATE SET unresolved = u.unresolved + excluded.unresolved
"""

# Each payout's plan (and a revert's), with the plan's nets on the slot each goes to: a checked
# (settlement) account's lowest slot, as a hold that checks funds takes, else one of the
# account's slots by turns, as holds that take any free slot spread over them.
_PLANS = """
CREATE TEMP TABLE pl_slot ON COMMIT DROP AS
SELECT s.account_id, CASE WHEN bool_or(n.checked) THEN ARRAY[min(s.slot)]
                          ELSE array_agg(s.slot ORDER BY s.slot) END AS slots
FROM account_slot s JOIN (SELECT DISTINCT account_id, checked FROM pl_flow_net) n USING (account_id)
GROUP BY s.account_id;

CREATE TEMP TABLE pl_plan ON COMMIT DROP AS
SELECT p.n, p.shop_no, p.amount_no, %(plan)s || p.payout_id AS plan_id, false AS reverts,
       h.plan_status AS status, p.t[1] AS created, coalesce(p.t[h.finish_revision], p.t[1]) AS updated,
       p.t[h.finish_revision] AS finished, h.finish_commits
FROM pl_payout p JOIN pl_shape h USING (shape)
UNION ALL
SELECT p.n, p.shop_no, p.amount_no, %(revert)s || p.payout_id, true, %(committed)s,
       p.t[h.revert_revision], p.t[h.revert_revision], p.t[h.revert_revision], true
FROM pl_payout p JOIN pl_shape h USING (shape) WHERE h.revert_revision IS NOT NULL;

INSERT INTO posting_plan (id, status, created_at, updated_at)
SELECT plan_id, status, pg_temp.pm_moment(created), pg_temp.pm_moment(updated)
FROM pl_plan ORDER BY n, reverts;

-- A revert moves every posting back.
INSERT INTO posting (plan_id, batch_id, position, from_id, to_id, amount, currency, description)
SELECT l.plan_id, 1, f.position, CASE WHEN l.reverts THEN f.to_id ELSE f.from_id END,
       CASE WHEN l.reverts THEN f.from_id ELSE f.to_id END, f.amount, f.currency, f.description
FROM pl_plan l JOIN pl_flow_posting f USING (shop_no, amount_no)
ORDER BY l.n, l.reverts, f.position;

CREATE TEMP TABLE pl_net ON COMMIT DROP AS
SELECT l.n, l.plan_id, f.account_id, s.slots[1 + mod(l.n, cardinality(s.slots))] AS slot,
       CASE WHEN l.reverts THEN -f.net ELSE f.net END AS net, l.created, l.finished, l.finish_commits
FROM pl_plan l JOIN pl_flow_net f USING (shop_no, amount_no) JOIN pl_slot s USING (account_id);

INSERT INTO posting_plan_account (plan_id, account_id, slot, net)
SELECT plan_id, account_id, slot, net FROM pl_net ORDER BY n, plan_id, account_id;
"""

# Every change of a slot, as its own amount, held debit and held credit moved: the hold when the
# plan was made, and its commit or rollback when it finished (a revert's, a microsecond after).
_HISTORY = """
CREATE TEMP TABLE pl_change ON COMMIT DROP AS
SELECT account_id, slot, created AS at, n, 0 AS step,
       0::bigint AS own, greatest(-net, 0) AS debit, greatest(net, 0) AS credit
FROM pl_net
UNION ALL
SELECT account_id, slot, CASE WHEN finished = created THEN finished + 1 ELSE finished END, n, 1,
       CASE WHEN finish_commits THEN net ELSE 0 END, -greatest(-net, 0), -greatest(net, 0)
FROM pl_net WHERE finished IS NOT NULL;

CREATE TEMP TABLE pl_total ON COMMIT DROP AS
SELECT account_id, slot, sum(own)::bigint AS own, sum(debit)::bigint AS debit, sum(credit)::bigint AS credit
FROM pl_change GROUP BY account_id, slot;

-- Each slot's balance before the period: its last row then, or nothing (a slot made since).
CREATE TEMP TABLE pl_base ON COMMIT DROP AS
SELECT t.account_id, t.slot, coalesce(b.own_amount, 0) AS own,
       coalesce(b.own_amount - b.min_available_amount, 0) AS debit,
       coalesce(b.max_available_amount - b.own_amount, 0) AS credit
FROM pl_total t LEFT JOIN LATERAL (
    SELECT own_amount, min_available_amount, max_available_amount FROM account_balance
    WHERE account_id = t.account_id AND slot = t.slot AND at < %(boundary)s
    ORDER BY at DESC, id DESC LIMIT 1
) b ON true;

INSERT INTO account_balance (account_id, slot, at, own_amount, min_available_amount, max_available_amount)
SELECT account_id, slot, pg_temp.pm_moment(at), own, own - debit, own + credit
FROM (
    SELECT c.account_id, c.slot, c.at, c.n, c.step,
           b.own + sum(c.own) OVER w AS own, b.debit + sum(c.debit) OVER w AS debit,
           b.credit + sum(c.credit) OVER w AS credit
    FROM pl_change c JOIN pl_base b USING (account_id, slot)
    WINDOW w AS (PARTITION BY c.account_id, c.slot ORDER BY c.at, c.n, c.step
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
) r
ORDER BY account_id, slot, at, n, step;

-- What was written after the period already counts what the preloaded payouts changed.
UPDATE account_balance b
SET own_amount = b.own_amount + t.own, min_available_amount = b.min_available_amount + t.own - t.debit,
    max_available_amount = b.max_available_amount + t.own + t.credit
FROM pl_total t
WHERE b.account_id = t.account_id AND b.slot = t.slot AND b.at >= %(boundary)s;

UPDATE account_slot s
SET own_amount = s.own_amount + t.own, held_debit = s.held_debit + t.debit,
    held_credit = s.held_credit + t.credit
FROM pl_total t WHERE s.account_id = t.account_id AND s.slot = t.slot;
"""

# Every event of every payout, none queued for Kafka (fields in order, see _EVENT_GROUPS).
_EVENTS = """
INSERT INTO payout_event (event_id, payout_id, sequence_id, created_at, payload)
SELECT e.event_id, e.payout_id, e.revision, pg_temp.pm_moment(e.at),
    %(Event_event_id)s || pg_temp.pm_pb_len(convert_to(e.event_id::text, 'UTF8'))
    || %(Event_payout_id)s || pg_temp.pm_pb_len(convert_to(e.payout_id, 'UTF8'))
    || e.sequence_segment
    || %(Event_created_at)s || pg_temp.pm_pb_len(pg_temp.pm_pb_timestamp(e.at))
    || coalesce(e.change_segment,
                %(Event_payout_change)s || pg_temp.pm_pb_len(
                    %(PayoutChange_created)s || pg_temp.pm_pb_len(
                        %(PayoutCreated_payout)s || pg_temp.pm_pb_len(e.snapshot))))
    || %(Event_payout)s || pg_temp.pm_pb_len(e.snapshot)
    || e.initiator_segment
FROM (
    SELECT p.n, gen_random_uuid() AS event_id, p.payout_id, r.revision, p.t[r.revision] AS at,
           st.sequence_segment, st.change_segment, st.initiator_segment,
           -- The Payout snapshot at the revision (fields in order, see _PAYOUT_GROUPS).
           %(Payout_payout_id)s || pg_temp.pm_pb_len(convert_to(p.payout_id, 'UTF8'))
           || %(Payout_created_at)s || pg_temp.pm_pb_len(pg_temp.pm_pb_timestamp(p.t[1]))
           || %(Payout_updated_at)s || pg_temp.pm_pb_len(pg_temp.pm_pb_timestamp(p.t[r.revision]))
           || s.segment || st.status_segment || f.segment || st.tail_segment AS snapshot
    FROM pl_payout p
    JOIN pl_shop s USING (shop_no)
    JOIN pl_flow f USING (shop_no, amount_no)
    CROSS JOIN LATERAL generate_series(1, p.revisions) AS r(revision)
    JOIN pl_step st ON st.shape = p.shape AND st.revision = r.revision
) e
ORDER BY e.n, e.revision
"""

_STATUSES = "SELECT status, count(*) FROM payout WHERE starts_with(payout_id, %(prefix)s) GROUP BY status"


@dataclass(frozen=True)
class _Shape:
    number: int
    low: int
    high: int
    # The payout after creation and after each change, and each change's accounting.
    payouts: tuple[Payout, ...]
    events: tuple[PayoutEvent, ...]
    accountings: tuple[Accounting, ...]


def _shapes(sample: Payout, moment: datetime) -> list[_Shape]:
    """Each shape walked through the model's transitions from a sample payout."""
    shapes = []
    low = 0
    for number, (path, weight) in enumerate(SHAPES):
        payout, created = model.create(
            model.PayoutRequest(sample.payout_id, sample.party_id, sample.shop_id, 1, CURRENCY, "", {}),
            payout_tool_id=sample.payout_tool_id,
            amount=sample.amount,
            fee=sample.fee,
            cash_flow=sample.cash_flow,
            now=moment,
            initiator=INITIATOR,
        )
        payouts, events, accountings = [payout], [created], [Accounting.NONE]
        for status in path:
            details = CANCEL_DETAILS if status is PayoutStatus.CANCELLED else ""
            change = model.transition(payouts[-1], status, now=moment, initiator=INITIATOR, details=details)
            assert change.event is not None, f"{path} repeats a status"
            payouts.append(change.payout)
            events.append(change.event)
            accountings.append(change.accounting)
        shapes.append(_Shape(number, low, low + weight, tuple(payouts), tuple(events), tuple(accountings)))
        low += weight
    if low != 1000:
        raise AssertionError(f"the shapes' weights add up to {low}, not 1000")
    return shapes


def _shape_row(shape: _Shape) -> tuple[Any, ...]:
    last = shape.payouts[-1]
    finish = [r for r, a in enumerate(shape.accountings, 1) if a in _FINISHED]
    revert = [r for r, a in enumerate(shape.accountings, 1) if a is Accounting.REVERT]
    plan = _FINISHED[shape.accountings[finish[0] - 1]] if finish else PlanStatus.HOLD
    return (
        shape.number,
        shape.low,
        shape.high,
        last.revision,
        last.status.value,
        last.cancel_details,
        plan.value,
        finish[0] if finish else None,
        bool(finish) and plan is PlanStatus.COMMITTED,
        revert[0] if revert else None,
    )


def _step_rows(shape: _Shape) -> Iterator[tuple[Any, ...]]:
    for payout, event in zip(shape.payouts, shape.events, strict=True):
        snapshot = payout_to_proto(payout)
        proto = event_to_proto(event)
        yield (
            shape.number,
            payout.revision,
            _only(snapshot, _PAYOUT_GROUPS[4]),
            _only(snapshot, _PAYOUT_GROUPS[6]),
            _only(proto, _EVENT_GROUPS[2]),
            None if isinstance(event.change, model.PayoutCreated) else _only(proto, _EVENT_GROUPS[4]),
            _only(proto, _EVENT_GROUPS[6]),
        )


def _payout(config: party_config.Config, shop: tuple[str, str], requested: int, moment: datetime) -> Payout:
    """A new payout of `requested` from `shop`, as the service makes it from the terms' cash flow."""
    party_id, shop_id = shop
    postings, tool = compute_postings(config, party_id, shop_id, requested, CURRENCY, "")
    sums = sum_payout(postings)
    return Payout(
        payout_id=PREFIX,
        party_id=party_id,
        shop_id=shop_id,
        status=PayoutStatus.UNPAID,
        created_at=moment,
        updated_at=moment,
        requested_amount=requested,
        requested_payout_tool_id="",
        payout_tool_id=tool,
        amount=sums.amount,
        fee=sums.fee,
        currency=CURRENCY,
        cash_flow=postings,
        metadata={},
        created_by=INITIATOR,
    )


@dataclass(frozen=True)
class _Flows:
    """The rows of pl_shop, pl_flow, pl_flow_posting and pl_flow_net."""

    shops: list[tuple[Any, ...]]
    flows: list[tuple[Any, ...]]
    postings: list[tuple[Any, ...]]
    nets: list[tuple[Any, ...]]


def _flows(
    config: party_config.Config,
    shops: Sequence[tuple[str, str]],
    pairs: Collection[tuple[int, int]],
    moment: datetime,
) -> _Flows:
    """Per shop, and per (shop number, amount number) in `pairs`: what the SQL joins payouts with."""
    flows = _Flows([], [], [], [])
    for shop_no in sorted({shop_no for shop_no, _ in pairs}):
        proto = payout_to_proto(_payout(config, shops[shop_no], AMOUNTS[0], moment))
        flows.shops.append((shop_no, *shops[shop_no], _only(proto, _PAYOUT_GROUPS[3])))
    for shop_no, amount_no in sorted(pairs):
        payout = _payout(config, shops[shop_no], AMOUNTS[amount_no], moment)
        proto = payout_to_proto(payout)
        flows.flows.append(
            (
                shop_no,
                amount_no,
                payout.requested_amount,
                payout.payout_tool_id,
                payout.amount,
                payout.fee,
                psycopg2.extras.Json([posting_to_json(p) for p in payout.cash_flow]),
                _only(proto, _PAYOUT_GROUPS[5]),
            )
        )
        # The batch the service holds: the cash flow's postings, in order.
        batch = [
            Posting(p.source.account_id, p.destination.account_id, p.amount, p.currency, p.details)
            for p in payout.cash_flow
        ]
        flows.postings.extend(
            [
                (shop_no, amount_no, position, p.from_id, p.to_id, p.amount, p.currency, p.description)
                for position, p in enumerate(batch)
            ]
        )
        checked = settlement_accounts(payout.cash_flow)
        flows.nets.extend(
            [
                (shop_no, amount_no, account_id, net, account_id in checked)
                for account_id, net in sorted(net_by_account(batch).items())
            ]
        )
    return flows


@contextmanager
def _connection(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    connection = psycopg2.connect(database_url)
    try:
        yield connection
    finally:
        connection.close()


class _Steps:
    """The preload's statements on one cursor, each step timed."""

    def __init__(self, cursor: psycopg2.extensions.cursor) -> None:
        self.cursor = cursor
        self.seconds: dict[str, float] = {}

    def run(self, step: str, statement: str, parameters: Mapping[str, Any] | None = None) -> None:
        began = time.monotonic()
        self.cursor.execute(statement, parameters)
        self.seconds[step] = self.seconds.get(step, 0.0) + time.monotonic() - began

    def fill(self, rows: Mapping[str, list[tuple[Any, ...]]]) -> None:
        """Fills each temporary table with its rows."""
        began = time.monotonic()
        for table, values in rows.items():
            psycopg2.extras.execute_values(
                self.cursor,
                f"INSERT INTO {table} VALUES %s",  # noqa: S608 (the preload's own table names)
                values,
                page_size=1000,
            )
        self.seconds["inputs"] = self.seconds.get("inputs", 0.0) + time.monotonic() - began


def preload(
    database_url: str, config_path: Path, shops: Sequence[tuple[str, str]], n: int, *, vacuum: bool = True
) -> Preloaded:
    """Stores `n` payouts of the past over `shops` (party id, shop id), whose accounts and terms
    are in the PartyManagement config at `config_path`, in one transaction; then VACUUM ANALYZE
    (or only ANALYZE) of the tables written, and a CHECKPOINT."""
    _check_field_groups()
    config = party_config.load(config_path)
    started = time.monotonic()
    with _connection(database_url) as connection:
        with connection, connection.cursor() as cursor:
            steps = _Steps(cursor)
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute("SET LOCAL temp_buffers = '2GB'")
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(_BOUNDARY, {"prefix": PREFIX})
            boundary, last_event, already = cursor.fetchone() or (None, 0, 0)
            if already:
                raise RuntimeError(f"the database has {already} preloaded payouts already")
            start, end = boundary - PERIOD, boundary - timedelta(seconds=1)
            steps.run("setup dated back", _BACKDATE, {"shift": PERIOD + SETUP_BEFORE, "boundary": boundary})
            for statement in _FUNCTIONS:
                cursor.execute(statement)
            cursor.execute(_TEMP_TABLES)
            sample = _payout(config, shops[0], AMOUNTS[0], start)
            shapes = _shapes(sample, start)
            steps.fill(
                {
                    "pl_shape": [_shape_row(shape) for shape in shapes],
                    "pl_step": [row for shape in shapes for row in _step_rows(shape)],
                }
            )
            steps.run(
                "payouts",
                _PAYOUTS,
                {
                    "prefix": PREFIX,
                    "digits": len(str(n)),
                    "shops": len(shops),
                    "amounts": len(AMOUNTS),
                    "n": n,
                    "start": _micros(start),
                    "end": _micros(end),
                    "step": max(1, (end - start) // _MICROSECOND // n),
                    "delay": MAX_DELAY // _MICROSECOND,
                },
            )
            cursor.execute("SELECT DISTINCT shop_no, amount_no FROM pl_payout")
            began = time.monotonic()
            flows = _flows(config, shops, cursor.fetchall(), start)
            steps.seconds["inputs"] += time.monotonic() - began
            steps.fill(
                {
                    "pl_shop": flows.shops,
                    "pl_flow": flows.flows,
                    "pl_flow_posting": flows.postings,
                    "pl_flow_net": flows.nets,
                }
            )
            steps.run("payouts", _INSERT_PAYOUTS, {"currency": CURRENCY, "initiator": INITIATOR})
            blank = replace(sample, payout_id="")
            steps.run(
                "plans and postings",
                _PLANS,
                {
                    "plan": blank.plan_id,
                    "revert": blank.revert_plan_id,
                    "committed": PlanStatus.COMMITTED.value,
                },
            )
            steps.run("balance history", _HISTORY, {"boundary": boundary})
            steps.run("events", _EVENTS, _tags())
            cursor.execute("SELECT min(id), max(id) FROM payout_event WHERE id > %s", (last_event,))
            first, last = cursor.fetchone() or (None, None)
            cursor.execute(_STATUSES, {"prefix": PREFIX})
            statuses = dict(cursor.fetchall())
            committing = time.monotonic()
        steps.seconds["commit"] = time.monotonic() - committing
        loaded = time.monotonic()
        connection.autocommit = True
        with connection.cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"{'VACUUM ANALYZE' if vacuum else 'ANALYZE'} {table}")
            vacuumed = time.monotonic()
            # The load's gigabytes written out now, not by checkpoints during what is measured next.
            cursor.execute("CHECKPOINT")
            checkpointed = time.monotonic()
            sizes = {}
            for table in sorted(t.name for t in metadata.sorted_tables):
                cursor.execute("SELECT pg_total_relation_size(%s)", (table,))
                (sizes[table],) = cursor.fetchone() or (0,)
    return Preloaded(
        payouts=n,
        events=(first or last_event + 1, last or last_event),
        start=start,
        end=end,
        statuses=statuses,
        load_seconds=loaded - started,
        vacuum_seconds=vacuumed - loaded,
        checkpoint_seconds=checkpointed - vacuumed,
        sizes=sizes,
        steps=steps.seconds,
    )


# Slots whose last history row (as the balance-at read orders them) is not the slot's balance.
_SLOTS_AGAINST_HISTORY = text(
    """
    SELECT s.account_id, s.slot FROM account_slot s
    LEFT JOIN LATERAL (
        SELECT own_amount, min_available_amount, max_available_amount FROM account_balance b
        WHERE b.account_id = s.account_id AND b.slot = s.slot ORDER BY at DESC, id DESC LIMIT 1
    ) b ON true
    WHERE (b.own_amount, b.min_available_amount, b.max_available_amount) IS DISTINCT FROM
          (s.own_amount, s.own_amount - s.held_debit, s.own_amount + s.held_credit)
    ORDER BY s.account_id, s.slot
    """
)

# History rows of the accounts that must stay funded (the settlement accounts) below zero.
_OVERDRAWN = text(
    """
    SELECT account_id, slot, at FROM account_balance
    WHERE account_id = ANY(:ids) AND min_available_amount < 0 ORDER BY at LIMIT 5
    """
)

# An account's own amount at a moment from its plans: the nets of those committed by then.
_COMMITTED_BY = text(
    """
    SELECT coalesce(sum(n.net), 0) AS own FROM posting_plan_account n
    JOIN posting_plan p ON p.id = n.plan_id
    WHERE n.account_id = :id AND p.status = 'COMMITTED' AND p.updated_at <= :at
    """
)


def check_sample(
    database_url: str, config_path: Path, preloaded: Preloaded, count: int = SAMPLE
) -> list[str]:
    """What does not hold after the preload, beyond the books audit:

    - `count` preloaded payouts, read back through the service's storage, their history replayed
      through the model: every stored event must be, byte for byte, what the codec makes of the
      replayed event, and the last must leave the payout as stored;
    - the balance history must end, for every slot, at the slot's balance;
    - no settlement account's history may go below zero;
    - the shared fee account's balance in the middle of the period, as the ledger reads it from
      the history, must be what its plans committed by then.
    """
    digits = len(str(preloaded.payouts))
    step = max(1, preloaded.payouts // count)
    ids = [f"{PREFIX}{n:0{digits}d}" for n in range(1, preloaded.payouts + 1, step)][:count]
    config = party_config.load(config_path)
    settlement = [
        shop.accounts.settlement for party in config.parties.values() for shop in party.shops.values()
    ]
    fee_account = config.system_accounts[CURRENCY].settlement
    middle = preloaded.start + (preloaded.end - preloaded.start) / 2

    def check(connection: Connection) -> list[str]:
        problems = [problem for payout_id in ids for problem in _replayed(Payouts(connection), payout_id)]
        problems += [
            f"account {row.account_id} slot {row.slot}: its last balance history row is not its balance"
            for row in connection.execute(_SLOTS_AGAINST_HISTORY)
        ]
        problems += [
            f"settlement account {row.account_id} slot {row.slot} was overdrawn at {row.at.isoformat()}"
            for row in connection.execute(_OVERDRAWN, {"ids": settlement})
        ]
        past = Ledger(connection).get_account(fee_account, middle).own_amount
        committed = int(connection.execute(_COMMITTED_BY, {"id": fee_account, "at": middle}).scalar_one())
        if past != committed:
            problems.append(
                f"the fee account {fee_account} held {past} at {middle.isoformat()} by its history,"
                f" but its plans committed {committed} by then"
            )
        return problems

    database = Database(create_database_engine(database_url, pool_size=1))
    try:
        return database.transaction(check)
    finally:
        database.dispose()


def _replayed(payouts: Payouts, payout_id: str) -> list[str]:
    stored = payouts.get(payout_id)
    if stored is None:
        return [f"{payout_id} is not stored"]
    payloads = payouts.events(payout_id, 0, len(PayoutStatus) + 1)
    events = [pb.Event.FromString(payload) for payload in payloads]
    if not events:
        return [f"{payout_id} has no events"]
    created_at = events[0].created_at.ToDatetime(tzinfo=UTC)
    current = replace(
        stored, status=PayoutStatus.UNPAID, updated_at=created_at, cancel_details="", revision=1
    )
    expected = [
        PayoutEvent(payout_id, 1, created_at, model.PayoutCreated(), current, INITIATOR, events[0].event_id)
    ]
    for event in events[1:]:
        change = event.payout_change.status_changed
        made = model.transition(
            current,
            STATUS_FROM_PROTO[change.status],
            now=event.created_at.ToDatetime(tzinfo=UTC),
            initiator=INITIATOR,
            details=change.details,
        )
        if made.event is None:
            return [f"{payout_id} event {event.sequence_id} changes nothing"]
        current = made.payout
        expected.append(replace(made.event, event_id=event.event_id))
    problems = [
        f"{payout_id} event {e.sequence_id} is not what the codec makes of it"
        for e, payload in zip(expected, payloads, strict=True)
        if event_to_proto(e).SerializeToString() != payload
    ]
    if current != stored:
        problems.append(f"{payout_id}: its events leave it as {current}, but it is stored as {stored}")
    return problems
