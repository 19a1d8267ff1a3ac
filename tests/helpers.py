"""Small builders shared by the tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

#: The hashes the tests sign certificates with (``CertificateBuilder.sign`` takes a few).
SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def make_key(kind: str = "p256") -> CertificateIssuerPrivateKeyTypes:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(kind)


def self_signed(key: CertificateIssuerPrivateKeyTypes, cn: str, *, not_before: datetime,
                not_after: datetime, serial: int = 1,
                algorithm: SignatureHash | None = None) -> x509.Certificate:
    """A bare self-signed certificate (no extensions) made by cryptography itself: the
    reference to compare iotsec's encoder with, or a certificate iotsec did not issue."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, algorithm or hashes.SHA256()))


def make_csr(key: CertificateIssuerPrivateKeyTypes | None = None, *, cn: str = "ignored",
             der: bool = False) -> bytes:
    key = key or make_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def alembic_to(rt: Any, action: str, revision: str) -> None:
    """Run alembic's ``upgrade`` or ``downgrade`` to ``revision`` on the runtime's store, in
    one of the store's transactions (the migration tests)."""
    from alembic import command
    from alembic.config import Config

    from iotsec.store import migrate
    from iotsec.store.db import transaction

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._MIGRATIONS))
    with transaction(rt.engine) as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)
