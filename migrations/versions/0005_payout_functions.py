"""the payout's writes as server-side functions: a create or a change in one round trip

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00

`pm_create_payout` and `pm_change_payout` do in PostgreSQL what the service did in a dozen
statements, each its own round trip: the payout row, its posting plan and the plan's hold,
commit, rollback or revert on the account slots (with their history), and the event with its
outbox row. Called alone in autocommit, each is one implicit transaction: one round trip, and
plans PostgreSQL caches per connection. The ledger's slot rules are those of
`payout_manager.storage.ledger` (module docstring); its refusals are SQLSTATEs of class PM, which
`payout_manager.storage.procedures` maps to the refusals of the one error table.

- PM001 insufficient funds, PM002 account not found, PM003 currency mismatch,
  PM004 the plan exists, PM005 plan not found, PM006 the plan is not in the state asked for.
- A balance leaving int64 fails bigint arithmetic itself (22003, numeric_value_out_of_range).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Slots an account may grow to under contention (ledger.MAX_SLOTS at this revision).
MAX_SLOTS = 64

HOLD_NEW_PLAN = """
CREATE FUNCTION pm_hold_new_plan(
    p_plan_id text, p_batch_id bigint, p_now timestamptz,
    p_from bigint[], p_to bigint[], p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_checked bigint[]
) RETURNS TABLE (account_id bigint, own_amount numeric, held_debit numeric, held_credit numeric)
LANGUAGE plpgsql AS $$
-- Holds one batch in a plan that does not exist yet. The `p_checked` accounts are locked whole,
-- waiting, in ascending order, and returned with their totals after the hold; every other account
-- gets one free slot, locked without waiting (a new slot when all are locked, up to MAX_SLOTS).
DECLARE
    v_ids bigint[];
    v_nets bigint[];
    v_slots smallint[];
    v_slot smallint;
    v_bad record;
    v_total numeric;
    v_count int;
    i int;
BEGIN
    INSERT INTO posting_plan (id, status, created_at, updated_at)
    VALUES (p_plan_id, 'HOLD', p_now, p_now) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % exists', p_plan_id USING ERRCODE = 'PM004';
    END IF;

    SELECT p.position - 1 AS position, p.account_id, p.currency, a.currency AS kept INTO v_bad
    FROM (
        SELECT ord AS position, side, CASE side WHEN 0 THEN f ELSE t END AS account_id, c AS currency
        FROM unnest(p_from, p_to, p_currencies) WITH ORDINALITY AS u(f, t, c, ord)
        CROSS JOIN (VALUES (0), (1)) AS s(side)
    ) p LEFT JOIN account a ON a.id = p.account_id
    WHERE a.id IS NULL OR a.currency <> p.currency
    ORDER BY p.position, p.side LIMIT 1;
    IF FOUND THEN
        IF v_bad.kept IS NULL THEN
            RAISE EXCEPTION 'account % does not exist', v_bad.account_id USING ERRCODE = 'PM002';
        END IF;
        RAISE EXCEPTION 'posting % moves % but account % is in %',
            v_bad.position, v_bad.currency, v_bad.account_id, v_bad.kept
            USING ERRCODE = 'PM003', DETAIL = v_bad.position || ' ' || v_bad.kept;
    END IF;

    SELECT array_agg(n.id ORDER BY n.id), array_agg(n.net ORDER BY n.id) INTO v_ids, v_nets
    FROM (
        SELECT m.id, sum(m.amount)::bigint AS net FROM (
            SELECT f AS id, -a AS amount FROM unnest(p_from, p_amounts) AS u(f, a)
            UNION ALL
            SELECT t, a FROM unnest(p_to, p_amounts) AS u(t, a)
        ) m GROUP BY m.id
    ) n;

    -- The checked accounts, whole: every slot locked in (account, slot) order; the lowest changes.
    v_slots := array_fill(NULL::smallint, ARRAY[cardinality(v_ids)]);
    FOR i IN 1 .. cardinality(v_ids) LOOP
        IF v_ids[i] = ANY(p_checked) THEN
            SELECT min(l.slot) INTO v_slot FROM (
                SELECT s.slot FROM account_slot s WHERE s.account_id = v_ids[i]
                ORDER BY s.slot FOR NO KEY UPDATE
            ) l;
            v_slots[i] := v_slot;
        END IF;
    END LOOP;
    -- Every other account: its lowest free slot, never waiting.
    FOR i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN v_slots[i] IS NOT NULL;
        SELECT s.slot INTO v_slot FROM account_slot s WHERE s.account_id = v_ids[i]
        ORDER BY s.slot LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            v_slot := NULL;
            SELECT count(*) INTO v_count FROM account_slot s WHERE s.account_id = v_ids[i];
            IF v_count < MAX_SLOTS THEN
                FOR attempt IN 1 .. 3 LOOP
                    INSERT INTO account_slot AS s (account_id, slot, own_amount, held_debit, held_credit)
                    VALUES (v_ids[i], 1 + floor(random() * 32766)::int, 0, 0, 0)
                    ON CONFLICT DO NOTHING RETURNING s.slot INTO v_slot;
                    EXIT WHEN v_slot IS NOT NULL;
                END LOOP;
            END IF;
            IF v_slot IS NULL THEN
                SELECT s.slot INTO v_slot FROM account_slot s WHERE s.account_id = v_ids[i]
                ORDER BY random() LIMIT 1 FOR NO KEY UPDATE;
            END IF;
        END IF;
        v_slots[i] := v_slot;
    END LOOP;

    -- The holds: bigint arithmetic refuses a balance leaving int64 (22003).
    WITH v AS (
        SELECT * FROM unnest(v_ids, v_slots, v_nets) AS v(account_id, slot, net)
    ), changed AS (
        UPDATE account_slot s
        SET held_debit = s.held_debit + greatest(0, -v.net), held_credit = s.held_credit + greatest(0, v.net)
        FROM v WHERE s.account_id = v.account_id AND s.slot = v.slot
        RETURNING s.account_id, s.slot, s.own_amount, s.held_debit, s.held_credit
    ), history AS (
        INSERT INTO account_balance (account_id, slot, at, own_amount, min_available_amount,
                                     max_available_amount)
        SELECT c.account_id, c.slot, clock_timestamp(), c.own_amount, c.own_amount - c.held_debit,
               c.own_amount + c.held_credit
        FROM changed c
    ), nets AS (
        INSERT INTO posting_plan_account (plan_id, account_id, slot, net)
        SELECT p_plan_id, v.account_id, v.slot, v.net FROM v
    )
    INSERT INTO posting (plan_id, batch_id, position, from_id, to_id, amount, currency, description)
    SELECT p_plan_id, p_batch_id, p.position - 1, p.f, p.t, p.a, p.c, p.d
    FROM unnest(p_from, p_to, p_amounts, p_currencies, p_descriptions)
        WITH ORDINALITY AS p(f, t, a, c, d, position);

    -- Each account's total over its slots must fit int64 too; the checked ones are returned.
    FOR i IN 1 .. cardinality(v_ids) LOOP
        SELECT greatest(abs(sum(s.own_amount)), sum(s.held_debit), sum(s.held_credit),
                        abs(sum(s.own_amount) - sum(s.held_debit)),
                        abs(sum(s.own_amount) + sum(s.held_credit)))
        INTO v_total FROM account_slot s WHERE s.account_id = v_ids[i];
        IF v_total > 9223372036854775807 THEN
            RAISE EXCEPTION 'account % would leave the int64 range of minor units', v_ids[i]
                USING ERRCODE = '22003';
        END IF;
    END LOOP;
    RETURN QUERY
        SELECT s.account_id, sum(s.own_amount), sum(s.held_debit), sum(s.held_credit)
        FROM account_slot s WHERE s.account_id = ANY(p_checked) GROUP BY s.account_id;
END
$$
""".replace("MAX_SLOTS", str(MAX_SLOTS))

FINISH_PLAN = """
CREATE FUNCTION pm_finish_plan(p_plan_id text, p_target text, p_now timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
-- Commits (moves the held nets into own amounts) or rolls back (drops them) a plan on hold;
-- asking for the state the plan is in already is a no-op. Returns the plan's accounts.
DECLARE
    v_status text;
BEGIN
    SELECT p.status INTO v_status FROM posting_plan p WHERE p.id = p_plan_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan % does not exist', p_plan_id USING ERRCODE = 'PM005';
    END IF;
    IF v_status <> p_target THEN
        IF v_status <> 'HOLD' THEN
            RAISE EXCEPTION 'plan % is %; it cannot become %', p_plan_id, v_status, p_target
                USING ERRCODE = 'PM006';
        END IF;
        PERFORM 1 FROM account_slot s JOIN posting_plan_account n
            ON n.account_id = s.account_id AND n.slot = s.slot
        WHERE n.plan_id = p_plan_id ORDER BY s.account_id, s.slot FOR NO KEY UPDATE OF s;
        WITH changed AS (
            UPDATE account_slot s
            SET own_amount = s.own_amount + CASE WHEN p_target = 'COMMITTED' THEN n.net ELSE 0 END,
                held_debit = s.held_debit - greatest(0, -n.net),
                held_credit = s.held_credit - greatest(0, n.net)
            FROM posting_plan_account n
            WHERE n.plan_id = p_plan_id AND s.account_id = n.account_id AND s.slot = n.slot
            RETURNING s.account_id, s.slot, s.own_amount, s.held_debit, s.held_credit
        )
        INSERT INTO account_balance (account_id, slot, at, own_amount, min_available_amount,
                                     max_available_amount)
        SELECT c.account_id, c.slot, clock_timestamp(), c.own_amount, c.own_amount - c.held_debit,
               c.own_amount + c.held_credit
        FROM changed c;
        UPDATE posting_plan SET status = p_target, updated_at = p_now WHERE id = p_plan_id;
    END IF;
    RETURN QUERY SELECT n.account_id FROM posting_plan_account n WHERE n.plan_id = p_plan_id
        ORDER BY n.account_id;
END
$$
"""

ADD_EVENT = """
CREATE FUNCTION pm_add_event(
    p_event_id uuid, p_payout_id text, p_sequence_id bigint, p_created_at timestamptz, p_payload bytea
) RETURNS void
LANGUAGE sql AS $$
-- Stores a payout's event and queues it for Kafka in the outbox.
WITH stored AS (
    INSERT INTO payout_event (event_id, payout_id, sequence_id, created_at, payload)
    VALUES (p_event_id, p_payout_id, p_sequence_id, p_created_at, p_payload) RETURNING id
)
INSERT INTO payout_event_outbox (event_row_id) SELECT id FROM stored
$$
"""

CREATE_PAYOUT = """
CREATE FUNCTION pm_create_payout(
    p_payout_id text, p_party_id text, p_shop_id text, p_status text, p_revision bigint,
    p_created_at timestamptz, p_requested_amount bigint, p_requested_payout_tool_id text,
    p_payout_tool_id text, p_amount bigint, p_fee bigint, p_currency text, p_cash_flow jsonb,
    p_metadata jsonb, p_created_by text,
    p_plan_id text, p_from bigint[], p_to bigint[], p_amounts bigint[], p_currencies text[],
    p_descriptions text[], p_checked bigint[], p_event_id uuid, p_payload bytea
) RETURNS boolean
LANGUAGE plpgsql AS $$
-- Stores a new payout holding its cash flow in plan p_plan_id, and its created event (sequence
-- p_revision, as every event's is its payout's revision) queued for Kafka.
-- False, with nothing done, when a payout with this id exists (waiting for an uncommitted one).
-- PM001 when a checked (settlement) account's minimum available amount would fall below zero.
DECLARE
    v_short record;
BEGIN
    INSERT INTO payout (payout_id, party_id, shop_id, status, created_at, updated_at,
                        requested_amount, requested_payout_tool_id, payout_tool_id, amount, fee,
                        currency, cash_flow, metadata, created_by, cancel_details, revision)
    VALUES (p_payout_id, p_party_id, p_shop_id, p_status, p_created_at, p_created_at,
            p_requested_amount, p_requested_payout_tool_id, p_payout_tool_id, p_amount, p_fee,
            p_currency, p_cash_flow, p_metadata, p_created_by, '', p_revision)
    ON CONFLICT (payout_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT h.account_id, h.own_amount - h.held_debit AS available INTO v_short
    FROM pm_hold_new_plan(p_plan_id, 1, p_created_at, p_from, p_to, p_amounts, p_currencies,
                          p_descriptions, p_checked) h
    WHERE h.own_amount - h.held_debit < 0
    ORDER BY h.account_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'settlement account % lacks % %', v_short.account_id, -v_short.available,
            p_currency USING ERRCODE = 'PM001';
    END IF;
    PERFORM pm_add_event(p_event_id, p_payout_id, p_revision, p_created_at, p_payload);
    RETURN true;
END
$$
"""

CHANGE_PAYOUT = """
CREATE FUNCTION pm_change_payout(
    p_payout_id text, p_revision bigint, p_status text, p_updated_at timestamptz,
    p_cancel_details text, p_accounting text, p_plan_id text, p_revert_plan_id text,
    p_from bigint[], p_to bigint[], p_amounts bigint[], p_currencies text[], p_descriptions text[],
    p_event_id uuid, p_payload bytea
) RETURNS boolean
LANGUAGE plpgsql AS $$
-- Moves a payout from revision p_revision - 1 to p_revision with its accounting (NONE, COMMIT,
-- ROLLBACK of the plan p_plan_id, or REVERT: the reversed postings held and committed in the
-- new plan p_revert_plan_id) and its event. False, with nothing done, when the payout is no
-- longer at p_revision - 1: the caller read it before a concurrent change and decides again.
BEGIN
    PERFORM FROM payout p
    WHERE p.payout_id = p_payout_id AND p.revision = p_revision - 1 FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_accounting = 'COMMIT' THEN
        PERFORM pm_finish_plan(p_plan_id, 'COMMITTED', p_updated_at);
    ELSIF p_accounting = 'ROLLBACK' THEN
        PERFORM pm_finish_plan(p_plan_id, 'ROLLED_BACK', p_updated_at);
    ELSIF p_accounting = 'REVERT' THEN
        PERFORM pm_hold_new_plan(p_revert_plan_id, 1, p_updated_at, p_from, p_to,
                                 p_amounts, p_currencies, p_descriptions, '{}');
        PERFORM pm_finish_plan(p_revert_plan_id, 'COMMITTED', p_updated_at);
    END IF;
    UPDATE payout SET status = p_status, updated_at = p_updated_at, cancel_details = p_cancel_details,
                      revision = p_revision
    WHERE payout_id = p_payout_id;
    PERFORM pm_add_event(p_event_id, p_payout_id, p_revision, p_updated_at, p_payload);
    RETURN true;
END
$$
"""

FUNCTIONS = {
    "pm_hold_new_plan": HOLD_NEW_PLAN,
    "pm_finish_plan": FINISH_PLAN,
    "pm_add_event": ADD_EVENT,
    "pm_create_payout": CREATE_PAYOUT,
    "pm_change_payout": CHANGE_PAYOUT,
}


def upgrade() -> None:
    for body in FUNCTIONS.values():
        op.execute(body)


def downgrade() -> None:
    for name in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {name}")
