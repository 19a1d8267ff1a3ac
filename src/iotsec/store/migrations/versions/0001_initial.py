"""Initial schema: authorities, devices, groups, certificates, CRLs, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authorities",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("key_label", sa.String(64), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["authorities.id"],
                                name="fk_authorities_parent_id_authorities"),
        sa.PrimaryKeyConstraint("id", name="pk_authorities"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_table(
        "groups",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_groups"),
    )
    op.create_table(
        "device_groups",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_device_groups_device_id_devices"),
        sa.ForeignKeyConstraint(["group_name"], ["groups.name"], ondelete="CASCADE",
                                name="fk_device_groups_group_name_groups"),
        sa.PrimaryKeyConstraint("device_id", "group_name", name="pk_device_groups"),
    )
    op.create_index("ix_device_groups_group_name", "device_groups", ["group_name"])
    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(42), nullable=False),
        sa.Column("authority_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("revocation_reason", sa.SmallInteger(), nullable=True),
        sa.Column("crl_entry", sa.LargeBinary(), nullable=True),
        sa.Column("replaced_by", sa.String(42), nullable=True),
        sa.ForeignKeyConstraint(["authority_id"], ["authorities.id"],
                                name="fk_certificates_authority_id_authorities"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name="fk_certificates_device_id_devices"),
        sa.PrimaryKeyConstraint("serial", name="pk_certificates"),
        sa.UniqueConstraint("sha256", name="uq_certificates_sha256"),
    )
    op.create_index("ix_certificates_device_id", "certificates", ["device_id"])
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.create_index("ix_certificates_authority_id_revoked_at", "certificates",
                    ["authority_id", "revoked_at"])
    op.create_table(
        "crls",
        sa.Column("authority_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.BigInteger(), nullable=False),
        sa.Column("next_update", sa.BigInteger(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["authority_id"], ["authorities.id"],
                                name="fk_crls_authority_id_authorities"),
        sa.PrimaryKeyConstraint("authority_id", name="pk_crls"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
    )


def downgrade() -> None:
    for table in ("api_tokens", "crls", "certificates", "device_groups", "groups",
                  "devices", "authorities"):
        op.drop_table(table)
