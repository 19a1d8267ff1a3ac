"""Issued certificates are strict RFC 5280, proven with cryptography and the openssl CLI."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from iotsec.errors import InvalidInputError, PkiError
from iotsec.pki import der
from iotsec.pki.ca import Authority, create_issuing, create_root
from iotsec.pki.csr import parse_csr
from iotsec.pki.issue import issue_device, issue_server
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.pki.profiles import DEVICE, MAX_VALIDITY_DAYS
from iotsec.pki.x509 import key_identifier, spki_der
from tests.helpers import make_csr, make_key
from tests.pki.asn1 import children, read_one
from tests.pki.support import Chain, build_chain, issue_leaf, run_openssl, write_pem

_HASH_OF = {
    KeyType.ECDSA_P256: hashes.SHA256,
    KeyType.ECDSA_P384: hashes.SHA384,
    KeyType.RSA_3072: hashes.SHA256,
}


def _hostile_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR asking for everything a device must not get."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotsec"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "iotsec Root CA"),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("mqtt.example"),
                    x509.UniformResourceIdentifier("urn:iotsec:device:x"),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _check_common(cert: x509.Certificate, issuer: x509.Certificate, key_type: KeyType) -> None:
    """What every certificate iotsec issues must satisfy (RFC 5280 4.1, 4.2)."""
    assert cert.version is x509.Version.v3
    assert cert.serial_number > 0
    assert cert.serial_number.bit_length() >= 64
    # The serial as encoded in the certificate: at most 20 octets, minimal, positive.
    _, cert_content = read_one(cert.public_bytes(serialization.Encoding.DER))
    tbs_tag, tbs = children(cert_content)[0]
    assert tbs_tag == der.SEQUENCE
    fields = children(tbs)
    assert fields[0] == (0xA0, bytes.fromhex("020102"))  # [0] EXPLICIT version v3
    serial_tag, serial_octets = fields[1]
    assert serial_tag == der.INTEGER
    assert 1 <= len(serial_octets) <= 20
    assert serial_octets[0] < 0x80
    # The inner and outer signature algorithms agree and match the issuer's key type.
    assert fields[2] == children(cert_content)[1]
    assert isinstance(cert.signature_hash_algorithm, _HASH_OF[key_type])
    cert.verify_directly_issued_by(issuer)
    # Every extension appears at most once; SKI is present and RFC 5280 method 1;
    # AKI names the issuer's SKI.
    oids = [e.oid for e in cert.extensions]
    assert len(oids) == len(set(oids))
    assert _ski(cert) == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert _aki(cert) == _ski(issuer)
    assert cert.issuer == issuer.subject


def _check_ca(cert: x509.Certificate, path_length: int) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == path_length
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value == x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )


def _check_device_leaf(cert: x509.Certificate, device_id: str) -> None:
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    assert cert.subject.rfc4514_string() == f"CN={device_id}"
    assert {e.oid for e in cert.extensions} == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    }
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=False, path_length=None)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value == x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty (RFC 5280 4.2.1.6)
    assert list(san.value) == [x509.UniformResourceIdentifier(f"urn:iotsec:device:{device_id}")]


def _openssl_verify(openssl: str, tmp_path: Path, chain: Chain, leaf_der: bytes, *extra: str):
    root = write_pem(tmp_path / "root.pem", chain.root.der)
    issuing = write_pem(tmp_path / "issuing.pem", chain.issuing.der)
    leaf = write_pem(tmp_path / "leaf.pem", leaf_der)
    return run_openssl(
        openssl, "verify", "-x509_strict", *extra, "-CAfile", root, "-untrusted", issuing, leaf
    )


def _pyca_verify(chain: Chain, leaf_der: bytes, now: datetime) -> list[x509.GeneralName]:
    verifier = (
        PolicyBuilder().store(Store([chain.root.certificate])).time(now).build_client_verifier()
    )
    leaf = x509.load_der_x509_certificate(leaf_der)
    verified = verifier.verify(leaf, [chain.issuing.certificate])
    return list(verified.subjects or [])


@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_chain_and_device_certificate_are_strict(
    key_type: KeyType,
    chain_for: Callable[[KeyType], Chain],
    openssl: str,
    tmp_path: Path,
) -> None:
    chain = chain_for(key_type)
    root, issuing = chain.root.certificate, chain.issuing.certificate

    # Root: self-signed, path length 1.
    _check_common(root, root, key_type)
    _check_ca(root, path_length=2)
    assert _aki(root) == _ski(root)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "iotsec"
    # Issuing CA: signed by the root, path length 0, inside the root's validity.
    _check_common(issuing, root, key_type)
    _check_ca(issuing, path_length=0)
    assert issuing.not_valid_after_utc <= root.not_valid_after_utc
    assert chain.issuing.key_id == _ski(issuing)

    # Device: the CSR asks to be a CA named like the root; it gets only CN=<id>.
    device_id = "sensor-01.floor_2:a"
    checked = parse_csr(_hostile_csr(ec.generate_private_key(ec.SECP256R1())))
    now = datetime.now(UTC)
    issued = issue_device(chain.issuing, device_id=device_id, spki=checked.spki,
                          profile=DEVICE, now=now)
    leaf = x509.load_der_x509_certificate(issued.der)
    _check_common(leaf, issuing, key_type)
    _check_device_leaf(leaf, device_id)
    assert spki_der(leaf.public_key()) == checked.spki
    assert leaf.serial_number == issued.serial
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == (
        issued.not_before, issued.not_after,
    )
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=365, minutes=1)

    # The reference tools agree.
    result = _openssl_verify(openssl, tmp_path, chain, issued.der, "-purpose", "sslclient")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("leaf.pem: OK")
    subjects = _pyca_verify(chain, issued.der, now)
    assert subjects == [x509.UniformResourceIdentifier(f"urn:iotsec:device:{device_id}")]
    # The certificate is for clients only.
    result = _openssl_verify(openssl, tmp_path, chain, issued.der, "-purpose", "sslserver")
    assert result.returncode != 0


def test_leaf_from_another_ca_is_refused(
    p256_chain: Chain, openssl: str, tmp_path: Path
) -> None:
    # The impostor chain has the same names as ours: only keys and signatures differ.
    ours = build_chain(KeyType.ECDSA_P256, p256_chain.now, label="same")
    impostor = build_chain(KeyType.ECDSA_P256, p256_chain.now, label="same")
    assert impostor.issuing.certificate.subject == ours.issuing.certificate.subject
    now = datetime.now(UTC)
    good = issue_leaf(ours.issuing, "dev-1", now)
    forged = issue_leaf(impostor.issuing, "dev-1", now)

    assert _openssl_verify(openssl, tmp_path, ours, good.der).returncode == 0
    result = _openssl_verify(openssl, tmp_path, ours, forged.der)
    assert result.returncode != 0
    assert "OK" not in result.stdout

    _pyca_verify(ours, good.der, now)
    with pytest.raises(VerificationError):
        _pyca_verify(ours, forged.der, now)


def test_issuing_ca_from_another_root_is_refused(p256_chain: Chain, openssl: str,
                                                 tmp_path: Path) -> None:
    other = build_chain(KeyType.ECDSA_P256, p256_chain.now)
    now = datetime.now(UTC)
    leaf = issue_leaf(other.issuing, "dev-2", now)
    mixed = Chain(now=now, root=p256_chain.root, issuing=other.issuing)
    assert _openssl_verify(openssl, tmp_path, mixed, leaf.der).returncode != 0
    with pytest.raises(VerificationError):
        _pyca_verify(mixed, leaf.der, now)


# --- validity --------------------------------------------------------------------------


def test_validity_defaults_to_the_profile() -> None:
    now = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    chain = build_chain(KeyType.ECDSA_P256, now - timedelta(days=1))
    issued = issue_leaf(chain.issuing, "dev-1", now)
    cert = x509.load_der_x509_certificate(issued.der)
    whole = now.replace(microsecond=0)
    assert cert.not_valid_before_utc == whole - timedelta(minutes=1)
    assert cert.not_valid_after_utc == whole + timedelta(days=DEVICE.validity_days)
    assert DEVICE.validity_days == 365


@pytest.mark.parametrize("days", [1, 30, 730])
def test_days_override(p256_chain: Chain, days: int) -> None:
    now = p256_chain.now + timedelta(hours=2)
    cert = x509.load_der_x509_certificate(issue_leaf(p256_chain.issuing, "d", now, days=days).der)
    assert cert.not_valid_after_utc == now.replace(microsecond=0) + timedelta(days=days)


def test_validity_is_capped_at_the_issuing_ca(p256_chain: Chain) -> None:
    ca_end = p256_chain.issuing.not_after
    # A long request right away...
    issued = issue_leaf(p256_chain.issuing, "d", p256_chain.now, days=MAX_VALIDITY_DAYS)
    assert x509.load_der_x509_certificate(issued.der).not_valid_after_utc == ca_end
    assert issued.not_after == ca_end
    # ...and the default near the end of the CA's life.
    late = ca_end - timedelta(days=100)
    issued = issue_leaf(p256_chain.issuing, "d", late)
    cert = x509.load_der_x509_certificate(issued.der)
    assert cert.not_valid_after_utc == ca_end
    assert cert.not_valid_before_utc == late - timedelta(minutes=1)


def test_issuing_ca_is_capped_at_the_root() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    root_signer = LocalSigner(KeyType.ECDSA_P256.generate())
    root = Authority.from_der(create_root(root_signer, now), root_signer)
    late = root.not_after - timedelta(days=30)
    signer = LocalSigner(KeyType.ECDSA_P256.generate())
    issuing = x509.load_der_x509_certificate(create_issuing(root, signer, late))
    assert issuing.not_valid_after_utc == root.not_after


@pytest.mark.parametrize("days", [-1, MAX_VALIDITY_DAYS + 1])
def test_days_out_of_range_are_refused(p256_chain: Chain, days: int) -> None:
    with pytest.raises(InvalidInputError, match="out of range"):
        issue_leaf(p256_chain.issuing, "d", p256_chain.now, days=days)


def test_zero_days_is_refused(p256_chain: Chain) -> None:
    with pytest.raises(InvalidInputError, match="out of range"):
        issue_leaf(p256_chain.issuing, "d", p256_chain.now, days=0)


def test_issuing_ca_about_to_expire_refuses(p256_chain: Chain) -> None:
    too_late = p256_chain.issuing.not_after - timedelta(minutes=30)
    with pytest.raises(PkiError, match="expire"):
        issue_leaf(p256_chain.issuing, "d", too_late)


# --- authorities and servers -----------------------------------------------------------


def test_authority_refuses_a_key_that_is_not_the_certificates(p256_chain: Chain) -> None:
    wrong = LocalSigner(KeyType.ECDSA_P256.generate())
    with pytest.raises(PkiError, match="does not match"):
        Authority.from_der(p256_chain.issuing.der, wrong)


def test_authority_key_id_is_ski(p256_chain: Chain) -> None:
    cert = p256_chain.root.certificate
    assert p256_chain.root.key_id == key_identifier(spki_der(cert.public_key()))
    assert p256_chain.root.subject == cert.subject.public_bytes()


def test_server_certificate(p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    key = make_key("p256")
    now = datetime.now(UTC)
    issued = issue_server(p256_chain.issuing, spki=spki_der(key.public_key()),
                          common_name="iotsec.example", dns_names=("iotsec.example",),
                          ips=("127.0.0.1",), now=now)
    cert = x509.load_der_x509_certificate(issued.der)
    _check_common(cert, p256_chain.issuing.certificate, KeyType.ECDSA_P256)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=397, minutes=1)
    result = _openssl_verify(openssl, tmp_path, p256_chain, issued.der, "-purpose", "sslserver")
    assert result.returncode == 0, result.stdout + result.stderr
    verifier = (
        PolicyBuilder()
        .store(Store([p256_chain.root.certificate]))
        .time(now)
        .build_server_verifier(x509.DNSName("iotsec.example"))
    )
    verifier.verify(cert, [p256_chain.issuing.certificate])


@pytest.mark.parametrize("kind", ["p384", "rsa2048"])
def test_device_keys_of_other_types(p256_chain: Chain, kind: str) -> None:
    key = make_key(kind)
    now = datetime.now(UTC)
    issued = issue_leaf(p256_chain.issuing, "dev-k", now, key=key)
    cert = x509.load_der_x509_certificate(issued.der)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert spki_der(cert.public_key()) == spki_der(key.public_key())
    _pyca_verify(p256_chain, issued.der, now)


def test_crl_distribution_point_when_configured(p256_chain: Chain, openssl: str,
                                                tmp_path: Path) -> None:
    now = datetime.now(UTC)
    checked = parse_csr(make_csr(make_key("p256"), der=True))
    url = "http://pki.example/crl/issuing.crl"
    issued = issue_device(p256_chain.issuing, device_id="dev-dp", spki=checked.spki,
                          profile=DEVICE, now=now, crl_url=url)
    cert = x509.load_der_x509_certificate(issued.der)
    dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not dp.critical
    assert dp.value == x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )
    _check_common(cert, p256_chain.issuing.certificate, KeyType.ECDSA_P256)
    result = _openssl_verify(openssl, tmp_path, p256_chain, issued.der)
    assert result.returncode == 0, result.stdout + result.stderr
    _pyca_verify(p256_chain, issued.der, now)
    # Without a URL there is no such extension.
    plain = x509.load_der_x509_certificate(issue_leaf(p256_chain.issuing, "dev-dp", now).der)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.CRLDistributionPoints)
