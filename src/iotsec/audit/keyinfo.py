"""What kind of key a certificate or a public key holds, read cheaply from its DER.

A fleet audit looks at the key of every certificate in use; loading each with a full X.509
parser costs far more than the audit itself. This module walks only the few DER headers
that lead to the SubjectPublicKeyInfo and the signature algorithm (both fixed positions of
RFC 5280's ``Certificate``), and classifies them against known algorithm identifiers.

Input is untrusted bytes: anything longer than :data:`MAX_DER` or not shaped as expected
raises :class:`KeyReadError` (the caller reports the object as unreadable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from iotsec.pki.der import element

__all__ = ["MAX_DER", "CertKeyFacts", "KeyFacts", "KeyReadError", "certificate_facts",
           "oid_text", "spki_facts"]

MAX_DER = 64 * 1024


class KeyReadError(ValueError):
    """The bytes are not a DER certificate / SubjectPublicKeyInfo this reader understands."""


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """A public key: ``algorithm`` is ``rsa``, ``ec``, ``ed25519``, ``ed448``, ``dsa`` or
    ``unknown``; ``bits`` the RSA modulus / DSA prime size or the curve's field size;
    ``curve`` the named curve of an EC key."""

    algorithm: str
    bits: int
    curve: str | None = None

    @property
    def label(self) -> str:
        if self.algorithm == "ec":
            return f"EC {self.curve or 'unknown curve'}"
        if self.algorithm in ("ed25519", "ed448"):
            return self.algorithm.capitalize()
        if self.algorithm == "unknown":
            return f"unknown ({self.curve})" if self.curve else "unknown"
        return f"{self.algorithm.upper()} {self.bits}"


class CertKeyFacts(NamedTuple):
    key: KeyFacts
    #: The certificate's signature algorithm (``sha256WithRSAEncryption``, ``ecdsa-with-SHA1``
    #: ...), or the dotted OID when it is not a known one.
    signature: str
    #: The SubjectPublicKeyInfo, as DER (to find one key used by several devices).
    spki: bytes

    @property
    def weak_signature(self) -> bool:
        return self.signature in WEAK_SIGNATURES


_RSA = bytes.fromhex("2a864886f70d010101")
_EC = bytes.fromhex("2a8648ce3d0201")
_DSA = bytes.fromhex("2a8648ce380401")
_ED25519 = bytes.fromhex("2b6570")
_ED448 = bytes.fromhex("2b6571")
_CURVES = {
    bytes.fromhex("2a8648ce3d030107"): ("P-256", 256),
    bytes.fromhex("2b81040022"): ("P-384", 384),
    bytes.fromhex("2b81040023"): ("P-521", 521),
    bytes.fromhex("2b81040021"): ("P-224", 224),
    bytes.fromhex("2a8648ce3d030101"): ("P-192", 192),
    bytes.fromhex("2b8104000a"): ("secp256k1", 256),
    bytes.fromhex("2b2403030208010107"): ("brainpoolP256r1", 256),
    bytes.fromhex("2b240303020801010b"): ("brainpoolP384r1", 384),
    bytes.fromhex("2b240303020801010d"): ("brainpoolP512r1", 512),
}
_SIGNATURES = {
    bytes.fromhex("2a864886f70d010104"): "md5WithRSAEncryption",
    bytes.fromhex("2a864886f70d010105"): "sha1WithRSAEncryption",
    bytes.fromhex("2a864886f70d01010b"): "sha256WithRSAEncryption",
    bytes.fromhex("2a864886f70d01010c"): "sha384WithRSAEncryption",
    bytes.fromhex("2a864886f70d01010d"): "sha512WithRSAEncryption",
    bytes.fromhex("2a864886f70d01010a"): "rsassa-pss",
    bytes.fromhex("2a8648ce3d0401"): "ecdsa-with-SHA1",
    bytes.fromhex("2a8648ce3d040302"): "ecdsa-with-SHA256",
    bytes.fromhex("2a8648ce3d040303"): "ecdsa-with-SHA384",
    bytes.fromhex("2a8648ce3d040304"): "ecdsa-with-SHA512",
    bytes.fromhex("2a8648ce380403"): "dsa-with-sha1",
    _ED25519: "ed25519",
    _ED448: "ed448",
}
WEAK_SIGNATURES = frozenset({"md5WithRSAEncryption", "sha1WithRSAEncryption",
                             "ecdsa-with-SHA1", "dsa-with-sha1"})


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``. Lengths need
    not be minimal: the audit classifies what devices present, it does not judge encoding."""
    return element(data, pos, end, minimal=False, error=KeyReadError)


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = _header(data, pos, end)
    if got != tag:
        raise KeyReadError(f"expected DER tag 0x{tag:02x}, found 0x{got:02x}")
    return start, stop


def _skip(data: bytes, pos: int, end: int) -> int:
    return _header(data, pos, end)[2]


def oid_text(raw: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content bytes."""
    if not raw:
        raise KeyReadError("empty OID")
    parts: list[int] = []
    value = 0
    for i, byte in enumerate(raw):
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
        elif i == len(raw) - 1:
            raise KeyReadError("truncated OID")
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in head + parts[1:])


def _algorithm(data: bytes, pos: int, end: int) -> tuple[bytes, bytes]:
    """(OID content, parameters DER) of an AlgorithmIdentifier at ``pos``."""
    start, stop = _expect(data, pos, end, 0x30)
    oid_start, oid_stop = _expect(data, start, stop, 0x06)
    return data[oid_start:oid_stop], data[oid_stop:stop]


def _integer_bits(content: bytes) -> int:
    stripped = content.lstrip(b"\x00")
    return (len(stripped) - 1) * 8 + stripped[0].bit_length() if stripped else 0


def _spki(data: bytes, pos: int, end: int) -> KeyFacts:
    start, stop = _expect(data, pos, end, 0x30)
    oid, params = _algorithm(data, start, stop)
    alg_stop = _skip(data, start, stop)
    bits_start, bits_stop = _expect(data, alg_stop, stop, 0x03)
    if bits_stop - bits_start < 1:
        raise KeyReadError("empty public key")
    key = data[bits_start + 1:bits_stop]
    if oid == _EC:
        if len(params) < 2 or params[0] != 0x06:
            return KeyFacts("ec", 0, "explicit or absent curve parameters")
        p_start, p_stop = _expect(params, 0, len(params), 0x06)
        named = _CURVES.get(params[p_start:p_stop])
        if named is None:
            return KeyFacts("ec", 0, oid_text(params[p_start:p_stop]))
        return KeyFacts("ec", named[1], named[0])
    if oid == _RSA:
        seq_start, seq_stop = _expect(key, 0, len(key), 0x30)
        n_start, n_stop = _expect(key, seq_start, seq_stop, 0x02)
        return KeyFacts("rsa", _integer_bits(key[n_start:n_stop]))
    if oid == _ED25519:
        return KeyFacts("ed25519", 256)
    if oid == _ED448:
        return KeyFacts("ed448", 448)
    if oid == _DSA:
        if len(params) < 2 or params[0] != 0x30:
            return KeyFacts("dsa", 0)
        seq_start, seq_stop = _expect(params, 0, len(params), 0x30)
        p_start, p_stop = _expect(params, seq_start, seq_stop, 0x02)
        return KeyFacts("dsa", _integer_bits(params[p_start:p_stop]))
    return KeyFacts("unknown", 0, oid_text(oid))


def spki_facts(spki: bytes) -> KeyFacts:
    """Classify a DER SubjectPublicKeyInfo."""
    if len(spki) > MAX_DER:
        raise KeyReadError(f"more than {MAX_DER} bytes")
    facts = _spki(spki, 0, len(spki))
    if _skip(spki, 0, len(spki)) != len(spki):
        raise KeyReadError("trailing bytes after the SubjectPublicKeyInfo")
    return facts


def _span(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, end) of the content of the DER element at ``pos``: the hot path of
    :func:`certificate_facts`, so written without the general reader's checks of the tag."""
    if pos + 2 > end or data[pos] & 0x1F == 0x1F:
        raise KeyReadError("truncated DER element or multi-byte tag")
    first = data[pos + 1]
    if first < 0x80:
        start = pos + 2
        stop = start + first
    else:
        count = first & 0x7F
        start = pos + 2 + count
        if count == 0 or count > 4 or start > end:
            raise KeyReadError("invalid DER length")
        stop = start + int.from_bytes(data[pos + 2:start], "big")
    if stop > end:
        raise KeyReadError("DER element runs past its container")
    return start, stop


def _named_spki_headers() -> dict[bytes, KeyFacts]:
    """AlgorithmIdentifier TLVs whose key facts do not depend on the key itself."""
    table: dict[bytes, KeyFacts] = {}
    for curve, (name, bits) in _CURVES.items():
        params = bytes((0x06, len(curve))) + curve
        body = bytes((0x06, len(_EC))) + _EC + params
        table[bytes((0x30, len(body))) + body] = KeyFacts("ec", bits, name)
    for oid, facts in ((_ED25519, KeyFacts("ed25519", 256)), (_ED448, KeyFacts("ed448", 448))):
        body = bytes((0x06, len(oid))) + oid
        table[bytes((0x30, len(body))) + body] = facts
    return table


_FIXED_KEYS = _named_spki_headers()
_SIGNATURE_CACHE: dict[bytes, str] = {}


def certificate_facts(der: bytes) -> CertKeyFacts:
    """The key and signature algorithm of a DER X.509 certificate (RFC 5280 4.1)."""
    end = len(der)
    if end > MAX_DER:
        raise KeyReadError(f"more than {MAX_DER} bytes")
    if not end or der[0] != 0x30:
        raise KeyReadError("not a DER certificate")
    cert_start, cert_stop = _span(der, 0, end)
    if cert_stop != end:
        raise KeyReadError("trailing bytes after the certificate")
    if cert_start >= end or der[cert_start] != 0x30:
        raise KeyReadError("no TBSCertificate")
    tbs_start, tbs_stop = _span(der, cert_start, cert_stop)
    pos = tbs_start
    # [0] version (optional), serialNumber, signature, issuer, validity, subject: skipped
    # with the header reads inlined (this loop runs for every certificate of the fleet).
    skip = 6 if pos < tbs_stop and der[pos] == 0xA0 else 5
    for _ in range(skip):
        if pos + 2 > tbs_stop or der[pos] & 0x1F == 0x1F:
            raise KeyReadError("truncated TBSCertificate")
        first = der[pos + 1]
        if first < 0x80:
            pos += 2 + first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or pos + 2 + count > tbs_stop:
                raise KeyReadError("invalid DER length")
            pos += 2 + count + int.from_bytes(der[pos + 2:pos + 2 + count], "big")
        if pos > tbs_stop:
            raise KeyReadError("DER element runs past its container")
    if pos >= tbs_stop or der[pos] != 0x30:
        raise KeyReadError("no SubjectPublicKeyInfo")
    spki_start, spki_end = _span(der, pos, tbs_stop)
    if spki_start >= spki_end or der[spki_start] != 0x30:
        raise KeyReadError("no AlgorithmIdentifier in the SubjectPublicKeyInfo")
    alg_end = _span(der, spki_start, spki_end)[1]
    key = _FIXED_KEYS.get(der[spki_start:alg_end])
    if key is not None:
        if alg_end >= spki_end or der[alg_end] != 0x03 \
                or _span(der, alg_end, spki_end)[1] != spki_end:
            raise KeyReadError("malformed public key")
    else:
        key = _spki(der, pos, tbs_stop)
    if tbs_stop >= cert_stop or der[tbs_stop] != 0x30:
        raise KeyReadError("no signature algorithm")
    sig_end = _span(der, tbs_stop, cert_stop)[1]
    sig_tlv = der[tbs_stop:sig_end]
    signature = _SIGNATURE_CACHE.get(sig_tlv)
    if signature is None:
        signature_oid, _ = _algorithm(der, tbs_stop, cert_stop)
        signature = _SIGNATURES.get(signature_oid) or oid_text(signature_oid)
        if len(_SIGNATURE_CACHE) < 256:
            _SIGNATURE_CACHE[sig_tlv] = signature
    return CertKeyFacts(key=key, signature=signature, spki=der[pos:spki_end])
