"""RFC 5280 building blocks, compared with pyca/cryptography's own encoder."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.keys import KeyType
from tests.helpers import SignatureHash, make_key, self_signed
from tests.pki.asn1 import children, read_one


def _split_extension(encoded: bytes) -> tuple[str, bool, bytes]:
    """(oid bytes hex, critical, extnValue content) of a DER Extension."""
    tag, content = read_one(encoded)
    assert tag == der.SEQUENCE
    parts = children(content)
    assert parts[0][0] == der.OBJECT_IDENTIFIER
    assert parts[-1][0] == der.OCTET_STRING
    if len(parts) == 3:
        # DER: a critical flag is present only when TRUE (DEFAULT FALSE is omitted).
        assert parts[1] == (der.BOOLEAN, b"\xff")
        return parts[0][1].hex(), True, parts[2][1]
    assert len(parts) == 2
    return parts[0][1].hex(), False, parts[1][1]


def _oid_content(ext_oid: x509.ObjectIdentifier) -> str:
    return read_one(der.oid(ext_oid.dotted_string))[1].hex()


@pytest.mark.parametrize(
    ("ours", "theirs", "critical"),
    [
        (enc.basic_constraints(ca=False), x509.BasicConstraints(ca=False, path_length=None), True),
        (enc.basic_constraints(ca=True), x509.BasicConstraints(ca=True, path_length=None), True),
        (
            enc.basic_constraints(ca=True, path_length=0),
            x509.BasicConstraints(ca=True, path_length=0),
            True,
        ),
        (
            enc.basic_constraints(ca=True, path_length=1),
            x509.BasicConstraints(ca=True, path_length=1),
            True,
        ),
        (
            enc.extended_key_usage(enc.OID_CLIENT_AUTH),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            False,
        ),
        (
            enc.subject_key_identifier(b"\x01" * 20),
            x509.SubjectKeyIdentifier(b"\x01" * 20),
            False,
        ),
        (
            enc.authority_key_identifier(b"\x02" * 20),
            x509.AuthorityKeyIdentifier(b"\x02" * 20, None, None),
            False,
        ),
        (
            enc.subject_alt_name(
                uris=("urn:iotsec:device:d1",), dns_names=("a.example",), ips=("10.0.0.1", "::1")
            ),
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("urn:iotsec:device:d1"),
                    x509.DNSName("a.example"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            False,
        ),
        (
            enc.crl_distribution_point("http://crl.example/ca.crl"),
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("http://crl.example/ca.crl")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            False,
        ),
        (
            enc.key_usage(enc.DIGITAL_SIGNATURE),
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            True,
        ),
    ],
)
def test_extensions_match_cryptography(
    ours: bytes, theirs: x509.ExtensionType, critical: bool
) -> None:
    oid_hex, is_critical, value = _split_extension(ours)
    assert oid_hex == _oid_content(theirs.oid)
    assert is_critical is critical
    assert value == theirs.public_bytes()


def test_name_matches_cryptography() -> None:
    expected = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotsec"),
            x509.NameAttribute(NameOID.COMMON_NAME, "iotsec Root CA 1"),
        ]
    ).public_bytes()
    assert enc.name("iotsec Root CA 1", "iotsec") == expected
    only_cn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-\u00e9")]).public_bytes()
    assert enc.name("dev-\u00e9") == only_cn


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048"])
def test_key_identifier_is_rfc5280_method_1(kind: str) -> None:
    public_key = make_key(kind).public_key()
    expected = x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    assert enc.key_identifier(enc.spki_der(public_key)) == expected


@pytest.mark.parametrize(
    ("key_type", "kind", "hash_alg"),
    [
        (KeyType.ECDSA_P256, "p256", hashes.SHA256()),
        (KeyType.ECDSA_P384, "p384", hashes.SHA384()),
        (KeyType.RSA_3072, "rsa2048", hashes.SHA256()),
    ],
)
def test_signature_algorithm_matches_cryptography(
    key_type: KeyType, kind: str, hash_alg: SignatureHash
) -> None:
    # The AlgorithmIdentifier cryptography writes (for RSA: with explicit NULL parameters)
    # is the last-but-one element of the certificate.
    cert = self_signed(make_key(kind), "t", not_before=datetime(2030, 1, 1, tzinfo=UTC),
                       not_after=datetime(2031, 1, 1, tzinfo=UTC), algorithm=hash_alg)
    _, content = read_one(cert.public_bytes(Encoding.DER))
    _tbs, alg, _sig = children(content)
    assert alg == read_one(enc.signature_algorithm(key_type))
