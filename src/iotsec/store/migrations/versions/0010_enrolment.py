"""Enrolment over EST: provisioning templates, enrolment secrets (stored hashed), claim
CAs, the claim certificates that enrolled, and enrolments waiting for approval. The new
device state 'awaiting-approval' is a value of the existing devices.state column, widened
from 16 to 32 characters to hold it (SQLite ignores the length and keeps the declaration).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _state_type(old: int, new: int) -> None:
    # SQLite does not enforce a VARCHAR's length (the model keeps 16 there), and rebuilding
    # the devices table would trip the foreign keys that point at it: only other databases
    # change the type.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("devices", "state", existing_type=sa.String(old),
                        type_=sa.String(new), existing_nullable=False)


def upgrade() -> None:
    _state_type(16, 32)
    op.create_table(
        "provisioning_templates",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("id_from", sa.String(16), nullable=False),
        sa.Column("require_approval", sa.Boolean(), nullable=False),
        sa.Column("profile", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_provisioning_templates"),
    )
    op.create_table(
        "enrolment_secrets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("template", sa.String(64), nullable=True),
        sa.Column("uses_total", sa.Integer(), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_enrolment_secrets_device_id_devices"),
        sa.ForeignKeyConstraint(["template"], ["provisioning_templates.name"],
                                name="fk_enrolment_secrets_template_provisioning_templates"),
        sa.PrimaryKeyConstraint("id", name="pk_enrolment_secrets"),
    )
    op.create_index("ix_enrolment_secrets_device_id", "enrolment_secrets", ["device_id"])
    op.create_index("ix_enrolment_secrets_template", "enrolment_secrets", ["template"])
    op.create_table(
        "claim_cas",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("allow_list", sa.Text(), nullable=True),
        sa.Column("hook_url", sa.String(2048), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["template"], ["provisioning_templates.name"],
                                name="fk_claim_cas_template_provisioning_templates"),
        sa.PrimaryKeyConstraint("name", name="pk_claim_cas"),
        sa.UniqueConstraint("fingerprint", name="uq_claim_cas_fingerprint"),
    )
    op.create_index("ix_claim_cas_template", "claim_cas", ["template"])
    op.create_table(
        "claim_uses",
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("claim_ca", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(42), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_claim_uses"),
    )
    op.create_table(
        "pending_enrolments",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("credential", sa.String(128), nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_pending_enrolments_device_id_devices"),
        sa.PrimaryKeyConstraint("device_id", name="pk_pending_enrolments"),
    )


def downgrade() -> None:
    op.drop_table("pending_enrolments")
    op.drop_table("claim_uses")
    op.drop_table("claim_cas")
    op.drop_table("enrolment_secrets")
    op.drop_table("provisioning_templates")
    # Without its enrolment records a device waiting for approval is disabled: an operator
    # decides about it again.
    devices = sa.table("devices", sa.column("state", sa.String))
    op.execute(sa.update(devices).where(devices.c.state == "awaiting-approval")
               .values(state="disabled"))
    _state_type(32, 16)
