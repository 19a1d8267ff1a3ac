"""OSCORE security contexts of the CoAP gateway, with their persisted replay windows.

Revision ID: 0025
Revises: 0023
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coap_oscore_contexts",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("recipient_id", sa.LargeBinary(), nullable=False),
        sa.Column("sender_id", sa.LargeBinary(), nullable=False),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("device_public_der", sa.LargeBinary(), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("replay_top", sa.BigInteger(), nullable=True),
        sa.Column("replay_bitmap", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_coap_oscore_contexts_device_id_devices"),
        sa.PrimaryKeyConstraint("device_id", name="pk_coap_oscore_contexts"),
        sa.UniqueConstraint("recipient_id", name="uq_coap_oscore_contexts_recipient_id"),
    )


def downgrade() -> None:
    op.drop_table("coap_oscore_contexts")
