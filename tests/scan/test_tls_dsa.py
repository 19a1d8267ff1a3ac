"""A DSA certificate is reported as a weak key, and cryptography's deprecation warning
about DSA never reaches the user (it used to be printed by every scan that met one)."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from iotsec.findings.model import Location
from iotsec.scan import tls


def _dsa_certificate(now: datetime) -> bytes:
    with warnings.catch_warnings():
        # Making the DSA key is this test's business; only the scanner's use of it is checked.
        warnings.simplefilter("ignore")
        from cryptography.hazmat.primitives.asymmetric import dsa

        key = dsa.generate_private_key(2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-camera")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=365))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("old-camera")]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cert.public_bytes(Encoding.DER)


def test_a_dsa_key_is_weak_and_no_deprecation_warning_escapes() -> None:
    now = datetime.now(UTC)
    der = _dsa_certificate(now)
    obs = tls.TlsObservation(host="192.0.2.7", port=8883, server_name="old-camera",
                             version="TLSv1.2", chain=[der])
    where = Location(uri="tcp://192.0.2.7:8883", host="192.0.2.7", port=8883)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        findings = tls.assess(obs, now=now, trust=tls.TrustStore.of(), location=where)
    assert [str(w.message) for w in caught] == []
    by_rule = {f.rule.id: f for f in findings}
    assert "tls/weak-key" in by_rule
    assert "DSA 2048 bits" in by_rule["tls/weak-key"].message
    assert dict(by_rule["tls/weak-key"].evidence)["leaf_key"] == "DSA 2048"
    assert "tls/self-signed" in by_rule  # the self-signature was still checked
