"""``init --import-ca`` with the key already in a PKCS#11 token (SoftHSM2), on SQLite and
PostgreSQL: the token key is checked against the certificate before anything is written;
the adopted CA then signs in the token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import NameOID

from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import open_runtime
from iotsec.app.setup import ImportedCa, init_home
from iotsec.config import Settings
from iotsec.custody.pkcs11 import Pkcs11KeyStore
from iotsec.custody.pkcs11_token import connect
from iotsec.errors import CaImportError
from iotsec.pki.keys import KeyType
from tests.custody_hsm.conftest import Hsm
from tests.helpers import make_csr


def _ca(name: str, public: CertificateIssuerPublicKeyTypes, issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey, path_length: int | None) -> bytes:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=900))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_import_a_ca_whose_key_is_in_the_token(hsm: Hsm, settings: Settings) -> None:
    token = connect(hsm.config())
    try:
        keys = Pkcs11KeyStore(token)
        public = keys.generate("enterprise-ca", KeyType.ECDSA_P256).public_key()
        keys.generate("another-key", KeyType.ECDSA_P256)
    finally:
        token.close()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Enterprise Root")])
    root = _ca("Enterprise Root", root_key.public_key(), root_name, root_key, None)
    issuing = _ca("Enterprise IoT CA", public, root_name, root_key, 0)  # type: ignore[arg-type]
    target = hsm.settings(settings)
    with pytest.raises(CaImportError, match="expected key"):
        init_home(target, imported=ImportedCa(certificate=issuing, root=root,
                                              key_label="another-key"), store_passphrase=True)
    assert not target.resolved_home.exists()  # nothing written
    made = init_home(target, imported=ImportedCa(certificate=issuing, root=root,
                                                 key_label="enterprise-ca"), store_passphrase=True)
    assert made.imported and made.issuing.certificate.subject.rfc4514_string() \
        == "CN=Enterprise IoT CA"
    rt = open_runtime(target)
    try:
        add_device(rt, NewDevice.parse("hsm-dev"))
        cert = x509.load_der_x509_certificate(issue_from_csr(rt, "hsm-dev", make_csr()).der)
        cert.verify_directly_issued_by(made.issuing.certificate)
    finally:
        rt.custody.close()
        rt.close()
