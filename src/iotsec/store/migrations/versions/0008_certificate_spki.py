"""certificates.spki_sha256: the SHA-256 of each certified SubjectPublicKeyInfo, indexed,
so that issuance can refuse a key that already belongs to another identity. Existing rows
are filled in from their DER.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import hashlib

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives import serialization

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BATCH = 1000


def _spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def upgrade() -> None:
    op.add_column("certificates", sa.Column("spki_sha256", sa.String(64), nullable=True))
    op.create_index("ix_certificates_spki_sha256", "certificates", ["spki_sha256"])
    certificates = sa.table("certificates", sa.column("serial", sa.String),
                            sa.column("der", sa.LargeBinary),
                            sa.column("spki_sha256", sa.String))
    conn = op.get_bind()
    last = ""
    while True:
        rows = conn.execute(sa.select(certificates.c.serial, certificates.c.der)
                            .where(certificates.c.serial > last)
                            .order_by(certificates.c.serial).limit(_BATCH)).all()
        if not rows:
            return
        conn.execute(sa.update(certificates)
                     .where(certificates.c.serial == sa.bindparam("b_serial"))
                     .values(spki_sha256=sa.bindparam("b_spki")),
                     [{"b_serial": r.serial, "b_spki": _spki_sha256(bytes(r.der))}
                      for r in rows])
        last = rows[-1].serial


def downgrade() -> None:
    op.drop_index("ix_certificates_spki_sha256", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("spki_sha256")
