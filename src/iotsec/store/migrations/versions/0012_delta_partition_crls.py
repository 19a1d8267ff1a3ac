"""Delta and partitioned CRLs: the published delta CRL of each CA and the complete CRL it
completes (delta_crls, a row of its own so that re-signing a delta never rewrites the
complete CRL's row), the partition of each certificate with an index that makes a
partition CRL a range scan, and one CRL row per partition (partition_crls).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delta_crls",
        sa.Column("authority_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=True),
        sa.Column("base", sa.BigInteger(), nullable=True),
        sa.Column("base_update", sa.BigInteger(), nullable=True),
        sa.Column("this_update", sa.BigInteger(), nullable=True),
        sa.Column("next_update", sa.BigInteger(), nullable=True),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["authority_id"], ["authorities.id"],
                                name="fk_delta_crls_authority_id_authorities"),
        sa.PrimaryKeyConstraint("authority_id", name="pk_delta_crls"),
    )
    # A nullable column is added in place, also on SQLite (foreign keys point at the table).
    op.add_column("certificates", sa.Column("crl_partition", sa.SmallInteger(), nullable=True))
    op.create_index("ix_certificates_partition_crl", "certificates",
                    ["authority_id", "crl_partition", "revoked_at", "not_after", "crl_entry"])
    op.create_table(
        "partition_crls",
        sa.Column("authority_id", sa.Integer(), nullable=False),
        sa.Column("partition", sa.SmallInteger(), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", sa.BigInteger(), nullable=False),
        sa.Column("next_update", sa.BigInteger(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["authority_id"], ["authorities.id"],
                                name="fk_partition_crls_authority_id_authorities"),
        sa.PrimaryKeyConstraint("authority_id", "partition", name="pk_partition_crls"),
    )


def downgrade() -> None:
    op.drop_table("partition_crls")
    op.drop_index("ix_certificates_partition_crl", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("crl_partition")
    op.drop_table("delta_crls")
