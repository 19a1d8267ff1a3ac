"""Access control: roles, their rules, role bindings for devices and groups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_roles"),
    )
    op.create_table(
        "role_rules",
        sa.Column("role_name", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("effect", sa.String(8), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(1024), nullable=False),
        sa.ForeignKeyConstraint(["role_name"], ["roles.name"], ondelete="CASCADE",
                                name="fk_role_rules_role_name_roles"),
        sa.PrimaryKeyConstraint("role_name", "position", name="pk_role_rules"),
    )
    op.create_table(
        "device_roles",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("role_name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_device_roles_device_id_devices"),
        sa.ForeignKeyConstraint(["role_name"], ["roles.name"],
                                name="fk_device_roles_role_name_roles"),
        sa.PrimaryKeyConstraint("device_id", "role_name", name="pk_device_roles"),
    )
    op.create_index("ix_device_roles_role_name", "device_roles", ["role_name"])
    op.create_table(
        "group_roles",
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("role_name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["group_name"], ["groups.name"], ondelete="CASCADE",
                                name="fk_group_roles_group_name_groups"),
        sa.ForeignKeyConstraint(["role_name"], ["roles.name"],
                                name="fk_group_roles_role_name_roles"),
        sa.PrimaryKeyConstraint("group_name", "role_name", name="pk_group_roles"),
    )
    op.create_index("ix_group_roles_role_name", "group_roles", ["role_name"])
    op.create_table(
        "policy_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_version"),
    )
    op.execute("INSERT INTO policy_version (id, version) VALUES (1, 0)")


def downgrade() -> None:
    for table in ("policy_version", "group_roles", "device_roles", "role_rules", "roles"):
        op.drop_table(table)
