"""encrypted_files: which key-encryption key each file made by 'iotsec data encrypt'
depends on, so that a KEK is not retired while a file may still need it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "encrypted_files",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kek_id", sa.String(80), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_encrypted_files"),
    )
    op.create_index("ix_encrypted_files_kek_id", "encrypted_files", ["kek_id"])


def downgrade() -> None:
    op.drop_table("encrypted_files")
