"""Detection: the rule documents applied (newest in force), the lease that makes one
serving process the detector and scheduler, where each followed source was read up to,
and the detector's learnt state (baselines and device profiles).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detect_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("applied_at", sa.BigInteger(), nullable=False),
        sa.Column("applied_by", sa.String(160), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_detect_rules"),
    )
    op.create_table(
        "detect_lease",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(160), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_detect_lease"),
    )
    op.create_table(
        "detect_cursors",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=True),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("lag", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("last_line_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_detect_cursors"),
    )
    op.create_table(
        "detect_state",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "subject", name="pk_detect_state"),
    )


def downgrade() -> None:
    op.drop_table("detect_state")
    op.drop_table("detect_cursors")
    op.drop_table("detect_lease")
    op.drop_table("detect_rules")
