"""The event log as a hash chain: each event gets its position (seq) and the hash over the
previous event's hash and its own fields; event_checkpoints holds the signed checkpoints.
Events recorded before this revision are chained here, in the order they were written.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BATCH = 5000


# The entry encoding of iotsec.eventlog.chain, kept here as it was when this ran.
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def _chain_existing() -> None:
    conn = op.get_bind()
    events = sa.table("events", sa.column("id", sa.BigInteger), sa.column("at", sa.BigInteger),
                      sa.column("kind", sa.String), sa.column("outcome", sa.String),
                      sa.column("actor", sa.String), sa.column("source", sa.String),
                      sa.column("subject", sa.String), sa.column("detail", sa.Text),
                      sa.column("seq", sa.BigInteger), sa.column("hash", sa.String))
    previous, seq, last_id = "0" * 64, 0, None
    while True:
        query = sa.select(events).order_by(events.c.id).limit(_BATCH)
        if last_id is not None:
            query = query.where(events.c.id > last_id)
        rows = conn.execute(query).all()
        if not rows:
            return
        updates = []
        for r in rows:
            seq += 1
            body = _encode((seq, r.at, r.kind, r.outcome, r.actor, r.source, r.subject,
                            r.detail))
            previous = hashlib.sha256((previous + body).encode("ascii")).hexdigest()
            updates.append({"row_id": r.id, "seq": seq, "hash": previous})
        conn.execute(sa.update(events).where(events.c.id == sa.bindparam("row_id"))
                     .values(seq=sa.bindparam("seq"), hash=sa.bindparam("hash")), updates)
        last_id = rows[-1].id


def upgrade() -> None:
    op.add_column("events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("events", sa.Column("hash", sa.String(64), nullable=True))
    _chain_existing()
    op.create_index("ix_events_seq", "events", ["seq"], unique=True)
    op.create_table(
        "event_checkpoints",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("key_label", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_event_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("event_checkpoints")
    op.drop_index("ix_events_seq", "events")
    op.drop_column("events", "hash")
    op.drop_column("events", "seq")
