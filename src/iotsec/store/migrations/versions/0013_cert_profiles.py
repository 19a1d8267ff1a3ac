"""Named certificate profiles, and the profile a device or a group is issued under. A
provisioning template may now name any profile: its column is widened from 16 to 64
characters (SQLite ignores the length and keeps the declaration).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _template_profile(old: int, new: int) -> None:
    # As 0010 did for devices.state: SQLite does not enforce a VARCHAR's length, and
    # rebuilding the table would trip the foreign keys that point at it.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("provisioning_templates", "profile", existing_type=sa.String(old),
                        type_=sa.String(new), existing_nullable=False)


def upgrade() -> None:
    _template_profile(16, 64)
    op.create_table(
        "cert_profiles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("validity_days", sa.Integer(), nullable=False),
        sa.Column("key_types", sa.Text(), nullable=False),
        sa.Column("ekus", sa.Text(), nullable=False),
        sa.Column("dns_from", sa.Text(), nullable=False),
        sa.Column("no_revocation", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cert_profiles"),
    )
    op.create_table(
        "device_profiles",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_device_profiles_device_id_devices"),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_profiles"),
    )
    op.create_index("ix_device_profiles_profile", "device_profiles", ["profile"])
    op.create_table(
        "group_profiles",
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["group_name"], ["groups.name"], ondelete="CASCADE",
                                name="fk_group_profiles_group_name_groups"),
        sa.PrimaryKeyConstraint("group_name", name="pk_group_profiles"),
    )
    op.create_index("ix_group_profiles_profile", "group_profiles", ["profile"])


def downgrade() -> None:
    op.drop_index("ix_group_profiles_profile", table_name="group_profiles")
    op.drop_table("group_profiles")
    op.drop_index("ix_device_profiles_profile", table_name="device_profiles")
    op.drop_table("device_profiles")
    op.drop_table("cert_profiles")
    _template_profile(64, 16)
