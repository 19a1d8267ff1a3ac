"""Migrations 0008 (certificates.spki_sha256, filled in from each certificate's DER) and
0009 (encrypted_files), down and up again, on SQLite and PostgreSQL: certificates issued
before the upgrade are found by their key afterwards."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import inspect, select

from iotsec.app.identity import devices
from iotsec.app.pki import issuance
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError
from iotsec.store import migrate
from iotsec.store import models as m
from tests.helpers import alembic_to, make_csr, make_key


def _spki_sha256(der: bytes) -> str:
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def test_the_spki_column_is_filled_in_for_existing_certificates(rt: Runtime) -> None:
    devices.add_device(rt, devices.NewDevice.parse("old-1"))
    devices.add_device(rt, devices.NewDevice.parse("new-1"))
    key = make_key()
    issued = [issuance.issue_from_csr(rt, "old-1", make_csr(key)),
              issuance.issue_from_csr(rt, "old-1", make_csr())]
    alembic_to(rt, "downgrade", "0007")
    with rt.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("certificates")}
        assert "spki_sha256" not in columns
        assert not inspect(conn).has_table("encrypted_files")
    alembic_to(rt, "upgrade", "head")
    assert migrate.is_current(rt.engine)
    with rt.engine.connect() as conn:
        rows = dict(conn.execute(select(m.certificates.c.serial,
                                        m.certificates.c.spki_sha256)).all())
        assert inspect(conn).has_table("encrypted_files")
        index_columns = [i["column_names"] for i in inspect(conn).get_indexes("certificates")]
        assert ["spki_sha256"] in index_columns
    for record in issued:
        assert rows[record.serial] == _spki_sha256(record.der)
    # The certificate issued before the upgrade is found by its key.
    with pytest.raises(ConflictError):
        issuance.issue_from_csr(rt, "new-1", make_csr(key))
