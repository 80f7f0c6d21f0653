"""who did what: payout.created_by, and the initiator in every stored event (SPEC 3 and 5)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:00:00

Every payout and event stored before this was made without an access policy, so by `anonymous`.
The stored events are serialized `payout_manager.v1.Event`s, which are served and published byte
for byte; they are amended in SQL, without decoding them, by appending fields. Protobuf parsers
take a field appended to a message as set, and an embedded message field appearing twice as the
two merged (Protocol Buffers encoding, "Last one wins" and merging of embedded messages), so:

- every event gets `initiator` (Event field 7) and `payout.created_by` (field 6, Payout field 15);
- the `created` event (sequence 1) also gets it in `payout_change.created.payout` (5, 1, 1, 15).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ANONYMOUS = b"anonymous"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2); every payload here is under 128 bytes."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


CREATED_BY = _field(15, ANONYMOUS)  # Payout.created_by
EVERY_EVENT = _field(7, ANONYMOUS) + _field(6, CREATED_BY)  # Event.initiator, Event.payout
CREATED_EVENT = _field(5, _field(1, _field(1, CREATED_BY)))  # Event.payout_change.created.payout


def upgrade() -> None:
    op.add_column("payout", sa.Column("created_by", sa.Text(), nullable=False, server_default="anonymous"))
    op.alter_column("payout", "created_by", server_default=None)
    op.get_bind().execute(
        sa.text(
            "UPDATE payout_event SET payload = payload || :every"
            " || CASE WHEN sequence_id = 1 THEN :created ELSE ''::bytea END"
        ),
        {"every": EVERY_EVENT, "created": CREATED_EVENT},
    )


def downgrade() -> None:
    # The events keep their initiator: readers of the older schema skip the field they do not know.
    op.drop_column("payout", "created_by")
