"""Secure OTA distribution: published releases, rollout campaigns and their devices, and
the server-side anti-rollback record of each device.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ota_releases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("security_counter", sa.BigInteger(), nullable=True),
        sa.Column("target_path", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("hardware", sa.Text(), nullable=False),
        sa.Column("targets_version", sa.Integer(), nullable=False),
        sa.Column("published_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ota_releases"),
    )
    op.create_index("ix_ota_releases_product_channel", "ota_releases", ["product", "channel"])
    op.create_index("ix_ota_releases_product_version", "ota_releases", ["product", "version"])
    op.create_table(
        "ota_campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("selector", sa.String(160), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("waves", sa.Text(), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("wave_started_at", sa.BigInteger(), nullable=False),
        sa.Column("failure_threshold_bp", sa.Integer(), nullable=False),
        sa.Column("device_timeout", sa.BigInteger(), nullable=False),
        sa.Column("soak", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_failures", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["ota_releases.id"],
                                name="fk_ota_campaigns_release_id_ota_releases"),
        sa.PrimaryKeyConstraint("id", name="pk_ota_campaigns"),
    )
    op.create_index("ix_ota_campaigns_state", "ota_campaigns", ["state"])
    op.create_table(
        "ota_campaign_devices",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("wave", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["ota_campaigns.id"], ondelete="CASCADE",
                                name="fk_ota_campaign_devices_campaign_id_ota_campaigns"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_ota_campaign_devices_device_id_devices"),
        sa.PrimaryKeyConstraint("campaign_id", "device_id", name="pk_ota_campaign_devices"),
    )
    op.create_index("ix_ota_campaign_devices_campaign_id_wave_status", "ota_campaign_devices",
                    ["campaign_id", "wave", "status"])
    op.create_index("ix_ota_campaign_devices_device_id", "ota_campaign_devices", ["device_id"])
    op.create_table(
        "ota_device_firmware",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(64), nullable=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("security_counter", sa.BigInteger(), nullable=False),
        sa.Column("min_version", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_ota_device_firmware_device_id_devices"),
        sa.PrimaryKeyConstraint("device_id", name="pk_ota_device_firmware"),
    )


def downgrade() -> None:
    for table in ("ota_device_firmware", "ota_campaign_devices", "ota_campaigns",
                  "ota_releases"):
        op.drop_table(table)
