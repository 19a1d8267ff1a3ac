"""OSCORE: the gateway's own sender sequence numbers of each context (for Observe
notifications), reserved in ranges: the column holds the end of the last range reserved,
so that after a restart the gateway starts above every number it may have used
(RFC 8613 Appendix B.1.1).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("coap_oscore_contexts",
                  sa.Column("sender_seq_reserved", sa.BigInteger(), nullable=False,
                            server_default="0"))


def downgrade() -> None:
    op.drop_column("coap_oscore_contexts", "sender_seq_reserved")
