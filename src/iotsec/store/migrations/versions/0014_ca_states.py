"""CA rollover: the state of each CA (active | retiring | retired), when it changed and
whether its key is kept offline; the pending requests of the offline-root ceremony.

``active`` stays, kept equal to ``state = 'active'`` by every writer, so a reader of an
older release still finds the CA that issues.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("authorities", sa.Column("state", sa.String(16), nullable=False,
                                           server_default="active"))
    op.add_column("authorities", sa.Column("state_changed_at", sa.BigInteger(),
                                           nullable=True))
    op.add_column("authorities", sa.Column("key_offline", sa.Boolean(), nullable=False,
                                           server_default=sa.false()))
    op.execute("UPDATE authorities SET state = CASE WHEN active THEN 'active' "
               "ELSE 'retiring' END")
    op.create_table(
        "ca_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_label", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ca_requests"),
    )


def downgrade() -> None:
    op.drop_table("ca_requests")
    # Not a batch (table rebuild): on SQLite that drops the table other tables' foreign
    # keys point at. SQLite (3.35+) and PostgreSQL both drop a plain column in place.
    for column in ("key_offline", "state_changed_at", "state"):
        op.execute(f"ALTER TABLE authorities DROP COLUMN {column}")
