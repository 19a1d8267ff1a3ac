"""The CRL indexes hold the revoked certificates only; certificates are counted by
authority on the ``not_after`` index.

An issuance inserts a certificate that is not revoked. Each index of ``certificates`` the
row enters is one more page the commit writes: the two CRL indexes (the complete CRL's,
migration 0004; a partition's, 0012) held every certificate although only the revoked
ones are ever read through them. Now they are partial (``WHERE revoked_at IS NOT NULL``),
so an issuance writes neither, and a revocation enters both as before. Every query that
reads them names a comparison on ``revoked_at``, which implies the condition for both
databases' planners.

They were also the only indexes that led with ``authority_id``, which the number of
certificates per CA (``ca list``, ``ca show``) was counted on. The ``not_after`` index
becomes ``(not_after, authority_id)`` so that the count stays an index-only pass (grouped
by a sort) instead of a read of the whole table; its range scans by ``not_after`` (expiry)
are unchanged.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

_COMPLETE = ("ix_certificates_authority_id_revoked_at_not_after_crl_entry",
             ["authority_id", "revoked_at", "not_after", "crl_entry"])
_PARTITION = ("ix_certificates_partition_crl",
              ["authority_id", "crl_partition", "revoked_at", "not_after", "crl_entry"])
_REVOKED = sa.text("revoked_at IS NOT NULL")


def upgrade() -> None:
    for name, columns in (_COMPLETE, _PARTITION):
        op.drop_index(name, table_name="certificates")
        op.create_index(name, "certificates", columns, sqlite_where=_REVOKED,
                        postgresql_where=_REVOKED)
    op.create_index("ix_certificates_not_after_authority_id", "certificates",
                    ["not_after", "authority_id"])
    op.drop_index("ix_certificates_not_after", table_name="certificates")


def downgrade() -> None:
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.drop_index("ix_certificates_not_after_authority_id", table_name="certificates")
    for name, columns in (_COMPLETE, _PARTITION):
        op.drop_index(name, table_name="certificates")
        op.create_index(name, "certificates", columns)
