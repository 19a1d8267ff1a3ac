"""RFC 5280 certificate encoding over any :class:`~iotsec.pki.keys.Signer`.

The builders here take already-validated values (a serial, names, a public key) and
return DER. Policy — which extensions a device gets, how long it lives — is decided by
``profiles`` and ``issue``; this module only encodes it exactly.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from iotsec.pki import der
from iotsec.pki.keys import KeyType, Signer

__all__ = [
    "CRL_SIGN", "DIGITAL_SIGNATURE", "KEY_CERT_SIGN", "KEY_ENCIPHERMENT", "OID_AIA", "OID_AKI",
    "OID_BASIC_CONSTRAINTS", "OID_CLIENT_AUTH", "OID_CN", "OID_CRL_DP", "OID_CRL_NUMBER",
    "OID_ECDSA_SHA256", "OID_ECDSA_SHA384", "OID_EKU", "OID_KEY_USAGE", "OID_NO_REV_AVAIL", "OID_O",
    "OID_REASON_CODE", "OID_RSA_SHA256", "OID_SAN", "OID_SERVER_AUTH", "OID_SKI", "TbsCertificate",
    "authority_info_access", "authority_key_identifier", "basic_constraints", "build_certificate",
    "crl_distribution_point", "extended_key_usage", "extension", "key_identifier", "key_usage",
    "key_usage_bits", "name", "no_rev_avail", "sign_tbs", "signature_algorithm", "spki_der",
    "subject_alt_name", "subject_key_identifier", "to_pem"
]

# Object identifiers (RFC 5280, RFC 5758, RFC 4055).
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
OID_RSA_SHA256 = "1.2.840.113549.1.1.11"
OID_CN = "2.5.4.3"
OID_O = "2.5.4.10"
OID_SKI = "2.5.29.14"
OID_KEY_USAGE = "2.5.29.15"
OID_SAN = "2.5.29.17"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_CRL_NUMBER = "2.5.29.20"
OID_REASON_CODE = "2.5.29.21"
OID_CRL_DP = "2.5.29.31"
OID_AKI = "2.5.29.35"
OID_EKU = "2.5.29.37"
#: RFC 9608 id-ce-noRevAvail: the issuer publishes no revocation information for this
#: certificate.
OID_NO_REV_AVAIL = "2.5.29.56"
OID_AIA = "1.3.6.1.5.5.7.1.1"
OID_AD_OCSP = "1.3.6.1.5.5.7.48.1"
OID_AD_CA_ISSUERS = "1.3.6.1.5.5.7.48.2"
OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"

_SIG_ALG = {
    KeyType.ECDSA_P256: der.sequence(der.oid(OID_ECDSA_SHA256)),
    KeyType.ECDSA_P384: der.sequence(der.oid(OID_ECDSA_SHA384)),
    # RFC 4055 2.1: the parameters of sha256WithRSAEncryption are NULL, and present.
    KeyType.RSA_3072: der.sequence(der.oid(OID_RSA_SHA256), der.null()),
}


def signature_algorithm(key_type: KeyType) -> bytes:
    """DER AlgorithmIdentifier of the signature a signer of ``key_type`` produces."""
    return _SIG_ALG[key_type]


# Key usage bits (RFC 5280 4.2.1.3), by position in the BIT STRING.
DIGITAL_SIGNATURE = 0
KEY_ENCIPHERMENT = 2
KEY_CERT_SIGN = 5
CRL_SIGN = 6


def key_usage_bits(*positions: int) -> bytes:
    """DER BIT STRING for a NamedBitList: trailing zero bits removed (X.690 11.2.2)."""
    value = 0
    for pos in positions:
        value |= 1 << (15 - pos)
    data = value.to_bytes(2, "big").rstrip(b"\x00") or b"\x00"
    unused = (len(data) * 8 - 16 + (value & -value).bit_length() - 1) if value else 0
    return der.bit_string(data, unused)


def name(common_name: str, organization: str | None = None) -> bytes:
    """A distinguished name of O (optional) then CN, each a UTF8String."""
    rdns = []
    if organization:
        rdns.append(der.set_of(der.sequence(der.oid(OID_O), der.utf8_string(organization))))
    rdns.append(der.set_of(der.sequence(der.oid(OID_CN), der.utf8_string(common_name))))
    return der.sequence(*rdns)


def spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_identifier(spki: bytes) -> bytes:
    """RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value."""
    return hashlib.sha1(_subject_public_key_bits(spki), usedforsecurity=False).digest()


def _read_len(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _subject_public_key_bits(spki: bytes) -> bytes:
    # SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier,
    #                                     subjectPublicKey BIT STRING }
    _, pos = _read_len(spki, 1)
    alg_len, alg_body = _read_len(spki, pos + 1)
    pos = alg_body + alg_len
    bits_len, bits_body = _read_len(spki, pos + 1)
    return spki[bits_body + 1 : bits_body + bits_len]  # skip the unused-bits octet


def extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    # DER omits a BOOLEAN equal to its DEFAULT (FALSE).
    if critical:
        return der.sequence(der.oid(oid), der.boolean(True), der.octet_string(value))
    return der.sequence(der.oid(oid), der.octet_string(value))


def basic_constraints(*, ca: bool, path_length: int | None = None) -> bytes:
    if not ca:
        return extension(OID_BASIC_CONSTRAINTS, der.sequence(), critical=True)
    parts = [der.boolean(True)]
    if path_length is not None:
        parts.append(der.integer(path_length))
    return extension(OID_BASIC_CONSTRAINTS, der.sequence(*parts), critical=True)


def key_usage(*positions: int) -> bytes:
    return extension(OID_KEY_USAGE, key_usage_bits(*positions), critical=True)


def extended_key_usage(*oids: str) -> bytes:
    return extension(OID_EKU, der.sequence(*(der.oid(o) for o in oids)))


def subject_key_identifier(key_id: bytes) -> bytes:
    return extension(OID_SKI, der.octet_string(key_id))


def authority_key_identifier(key_id: bytes) -> bytes:
    return extension(OID_AKI, der.sequence(der.implicit_primitive(0, key_id)))


def subject_alt_name(
    *, uris: Sequence[str] = (), dns_names: Sequence[str] = (), ips: Sequence[str] = ()
) -> bytes:
    names = [der.implicit_primitive(6, u.encode("ascii")) for u in uris]
    names += [der.implicit_primitive(2, d.encode("ascii")) for d in dns_names]
    names += [der.implicit_primitive(7, ipaddress.ip_address(i).packed) for i in ips]
    return extension(OID_SAN, der.sequence(*names))


def crl_distribution_point(uri: str) -> bytes:
    # DistributionPoint { distributionPoint [0] { fullName [0] GeneralNames } }
    general_name = der.implicit_primitive(6, uri.encode("ascii"))
    point = der.sequence(der.explicit(0, der.explicit(0, general_name)))
    return extension(OID_CRL_DP, der.sequence(point))


def no_rev_avail() -> bytes:
    # RFC 9608 2: extnValue is the DER of NULL, and the extension is not critical.
    return extension(OID_NO_REV_AVAIL, der.null())


def authority_info_access(*, ocsp: str | None, ca_issuers: str | None) -> bytes:
    """RFC 5280 4.2.2.1: where to ask OCSP and where to fetch the issuer's certificate."""
    descriptions = [der.sequence(der.oid(method), der.implicit_primitive(6, uri.encode("ascii")))
                    for method, uri in ((OID_AD_OCSP, ocsp), (OID_AD_CA_ISSUERS, ca_issuers))
                    if uri]
    return extension(OID_AIA, der.sequence(*descriptions))


@dataclass(frozen=True, slots=True)
class TbsCertificate:
    """The fields of a version 3 TBSCertificate, already encoded where they are DER."""

    serial: int
    issuer: bytes
    subject: bytes
    spki: bytes
    not_before: datetime
    not_after: datetime
    extensions: tuple[bytes, ...]

    def encode(self, key_type: KeyType) -> bytes:
        return der.sequence(
            der.explicit(0, der.integer(2)),
            der.integer(self.serial),
            signature_algorithm(key_type),
            self.issuer,
            der.sequence(der.time(self.not_before), der.time(self.not_after)),
            self.subject,
            self.spki,
            der.explicit(3, der.sequence(*self.extensions)),
        )


def sign_tbs(tbs: bytes, signer: Signer) -> bytes:
    """Wrap a TBS structure (certificate or CRL) with the signer's algorithm and signature."""
    return der.sequence(tbs, signature_algorithm(signer.key_type), der.bit_string(signer.sign(tbs)))


def build_certificate(tbs: TbsCertificate, signer: Signer) -> bytes:
    return sign_tbs(tbs.encode(signer.key_type), signer)


def to_pem(der_bytes: bytes, label: str) -> bytes:
    """RFC 7468 textual encoding: base64 in 64-character lines between the labels."""
    import base64

    b64 = base64.b64encode(der_bytes)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n".encode("ascii") + b"\n".join(lines)
            + f"\n-----END {label}-----\n".encode("ascii"))
