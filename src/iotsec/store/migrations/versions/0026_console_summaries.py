"""Console summaries: the fleet aggregates the console shows (devices and certificates by
state, expiry per week), stored with the time they were computed so that every serving
process answers with the newest one at once, and a claim so that one process at a time
recomputes them.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_summaries",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("computed_at", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("claimed_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_console_summaries"),
    )


def downgrade() -> None:
    op.drop_table("console_summaries")
