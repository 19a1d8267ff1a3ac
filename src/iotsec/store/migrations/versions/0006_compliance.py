"""Compliance reports: versioned attestations (status and justification per provision).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_attestations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("framework", sa.String(32), nullable=False),
        sa.Column("provision", sa.String(48), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compliance_attestations"),
    )
    op.create_index("ix_compliance_attestations_framework_provision_version",
                    "compliance_attestations", ["framework", "provision", "version"],
                    unique=True)


def downgrade() -> None:
    op.drop_table("compliance_attestations")
