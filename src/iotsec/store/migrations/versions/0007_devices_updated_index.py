"""An index on devices.updated_at: serving processes ask which devices changed since their
last look, to keep their cached registry entries current.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_updated_at", "devices", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_devices_updated_at", table_name="devices")
