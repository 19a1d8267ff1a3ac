"""Quarantine: incidents and the devices they hold (with the state each returns to), and
indexes on events.actor and events.subject for a device's events and timeline.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_actor_at", "events", ["actor", "at"])
    op.create_index("ix_events_subject_at", "events", ["subject", "at"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("reason", sa.String(512), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("closed_by", sa.String(160), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_state_opened_at", "incidents", ["state", "opened_at"])
    op.create_table(
        "quarantines",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("incident_id", sa.String(32), nullable=False),
        sa.Column("previous_state", sa.String(32), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name="fk_quarantines_device_id_devices"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name="fk_quarantines_incident_id_incidents"),
        sa.PrimaryKeyConstraint("device_id", name="pk_quarantines"),
    )
    op.create_index("ix_quarantines_incident_id", "quarantines", ["incident_id"])


def downgrade() -> None:
    op.drop_table("quarantines")
    op.drop_table("incidents")
    op.drop_index("ix_events_subject_at", table_name="events")
    op.drop_index("ix_events_actor_at", table_name="events")
