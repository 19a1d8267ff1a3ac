"""A covering index for building CRLs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_authority_id_revoked_at_not_after_crl_entry",
                    "certificates", ["authority_id", "revoked_at", "not_after", "crl_entry"])
    op.drop_index("ix_certificates_authority_id_revoked_at", table_name="certificates")


def downgrade() -> None:
    op.create_index("ix_certificates_authority_id_revoked_at", "certificates",
                    ["authority_id", "revoked_at"])
    op.drop_index("ix_certificates_authority_id_revoked_at_not_after_crl_entry",
                  table_name="certificates")
