"""The wire formats of EST (RFC 7030, with the clarifications of RFC 8951), pure.

EST moves DER objects as base64 text in HTTP bodies: a PKCS#10 request in, a "certs-only"
PKCS#7 (CMS SignedData with certificates and no signers) out, the CSR attributes a server
wants as a DER ``CsrAttrs``, and a server-generated key as a two-part ``multipart/mixed``
answer. This module encodes and decodes those bodies and nothing else: who may enrol, and
what they get, is decided by the services.

Every reader states its limit and refuses more before decoding (:data:`MAX_EST_BODY`,
:data:`MAX_CERTS_ONLY_BYTES`, :data:`MAX_CERTS`), and every refusal is an
:class:`~iotsec.errors.InvalidInputError` subclass: ``InputTooLargeError`` (HTTP 413) or
``MalformedInputError`` (HTTP 400).
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from iotsec.errors import InputTooLargeError, MalformedInputError
from iotsec.pki import der
from iotsec.pki.keys import KeyType
from iotsec.pki.x509 import OID_CN, OID_ECDSA_SHA256, OID_ECDSA_SHA384, OID_RSA_SHA256

__all__ = [
    "CONTENT_CSRATTRS", "CONTENT_PKCS7", "CONTENT_PKCS7_CERTS", "CONTENT_PKCS8", "CONTENT_PKCS10",
    "MAX_CERTS", "MAX_CERTS_ONLY_BYTES", "MAX_EST_BODY", "OID_SERIAL_NUMBER",
    "SERVERKEYGEN_BOUNDARY", "certs_only", "csr_attributes", "decode_base64_body",
    "encode_base64_body", "read_certs_only", "serverkeygen_body"
]

#: The largest request body an EST server reads (a base64 CSR is a few KiB).
MAX_EST_BODY: Final = 64 * 1024
#: The largest certs-only PKCS#7 :func:`read_certs_only` decodes, and the most certificates.
MAX_CERTS_ONLY_BYTES: Final = 256 * 1024
MAX_CERTS: Final = 16

CONTENT_PKCS7: Final = "application/pkcs7-mime"
CONTENT_PKCS7_CERTS: Final = "application/pkcs7-mime; smime-type=certs-only"
CONTENT_PKCS10: Final = "application/pkcs10"
CONTENT_PKCS8: Final = "application/pkcs8"
CONTENT_CSRATTRS: Final = "application/csrattrs"

#: The boundary of a serverkeygen answer. Its parts are base64, whose alphabet has no "-",
#: so a boundary with a "-" can never occur inside a part (RFC 2046 5.1.1), and a fixed one
#: keeps the answer a function of its inputs.
SERVERKEYGEN_BOUNDARY: Final = "iotsec-est-serverkeygen"

# RFC 5652 (CMS) content types, RFC 5480 / RFC 8017 key algorithms, X.520 serialNumber.
_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_OID_SECP256R1 = "1.2.840.10045.3.1.7"
_OID_SECP384R1 = "1.3.132.0.34"
_OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_SERIAL_NUMBER: Final = "2.5.4.5"

# RFC 8951 3.1: base64 "may contain" line breaks and other white space between characters.
_WHITESPACE = b" \t\r\n\x0b\x0c"
_LINE = 64


def decode_base64_body(body: bytes) -> bytes:
    """The DER in an EST request body: base64 (RFC 4648 alphabet, padding required) with any
    white space between characters, at most :data:`MAX_EST_BODY` bytes."""
    if len(body) > MAX_EST_BODY:
        raise InputTooLargeError(f"the request body is {len(body)} bytes; the limit is "
                                 f"{MAX_EST_BODY}")
    compact = body.translate(None, _WHITESPACE)
    hint = "send the DER object base64-encoded (RFC 8951), e.g. 'openssl base64 -in req.der'"
    if not compact:
        raise MalformedInputError("the request body is empty", hint=hint)
    if len(compact) % 4:
        raise MalformedInputError("the request body is not base64 (its length is not a "
                                  "multiple of 4: padding is missing or the text is cut)",
                                  hint=hint)
    try:
        decoded = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        raise MalformedInputError("the request body is not base64", hint=hint) from None
    if not decoded:
        raise MalformedInputError("the request body decodes to nothing", hint=hint)
    return decoded


def _base64_lines(data: bytes, newline: bytes) -> bytes:
    text = binascii.b2a_base64(data, newline=False)
    return b"".join(text[i:i + _LINE] + newline for i in range(0, len(text), _LINE))


def encode_base64_body(der_bytes: bytes) -> bytes:
    """``der_bytes`` as an EST response body: base64 in 64-character lines, each ending in
    a newline (what ``openssl base64 -d`` reads)."""
    return _base64_lines(der_bytes, b"\n")


def certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """A DER "certs-only" PKCS#7: SignedData with ``certs`` and no signers (RFC 7030 4.1.3).
    DER orders the certificates by their encodings, not as given."""
    if not certs:
        raise MalformedInputError("a certs-only message needs at least one certificate")
    return pkcs7.serialize_certificates(list(certs), Encoding.DER)


def _malformed(message: str) -> MalformedInputError:
    return MalformedInputError(f"not a certs-only PKCS#7: {message}",
                               hint="expected DER CMS SignedData with certificates only")


def _next(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """(start, end) of the content of the element at ``pos``, which must have ``tag``."""
    found, start, stop = der.element(data, pos, end, minimal=False, error=_malformed)
    if found != tag:
        raise _malformed(f"{what} expected, tag 0x{found:02x} found")
    return start, stop


def _expect_oid(data: bytes, pos: int, end: int, dotted: str, what: str) -> int:
    stop = _next(data, pos, end, der.OBJECT_IDENTIFIER, what)[1]
    if data[pos:stop] != der.oid(dotted):
        raise _malformed(f"the {what} is not {dotted}")
    return stop


def read_certs_only(data: bytes) -> list[x509.Certificate]:
    """The certificates of a DER certs-only PKCS#7 (at most :data:`MAX_CERTS_ONLY_BYTES`
    bytes and :data:`MAX_CERTS` certificates), in the order encoded. Anything else -- a
    signed message, trailing bytes, no certificates, a certificate that does not parse --
    is refused."""
    if len(data) > MAX_CERTS_ONLY_BYTES:
        raise InputTooLargeError(f"the PKCS#7 is {len(data)} bytes; the limit is "
                                 f"{MAX_CERTS_ONLY_BYTES}")
    start, end = _next(data, 0, len(data), der.SEQUENCE, "ContentInfo")
    if end != len(data):
        raise _malformed("bytes follow the ContentInfo")
    pos = _expect_oid(data, start, end, _OID_SIGNED_DATA, "content type")
    inner, inner_end = _next(data, pos, end, 0xA0, "[0] content")
    if inner_end != end:
        raise _malformed("bytes follow the content")
    pos, signed_end = _next(data, inner, inner_end, der.SEQUENCE, "SignedData")
    if signed_end != inner_end:
        raise _malformed("bytes follow the SignedData")
    pos = _next(data, pos, signed_end, der.INTEGER, "version")[1]
    pos = _next(data, pos, signed_end, der.SET, "digestAlgorithms")[1]
    encap, pos = _next(data, pos, signed_end, der.SEQUENCE, "encapContentInfo")
    _expect_oid(data, encap, pos, _OID_DATA, "encapsulated content type")
    certs: list[x509.Certificate] = []
    if pos < signed_end and data[pos] == 0xA0:
        item, certs_end = _next(data, pos, signed_end, 0xA0, "[0] certificates")
        while item < certs_end:
            cert_start = item
            item = _next(data, item, certs_end, der.SEQUENCE, "Certificate")[1]
            if len(certs) == MAX_CERTS:
                raise _malformed(f"more than {MAX_CERTS} certificates")
            try:
                certs.append(x509.load_der_x509_certificate(data[cert_start:item]))
            except ValueError:
                raise _malformed(f"certificate {len(certs) + 1} does not parse") from None
        pos = certs_end
    if pos < signed_end and data[pos] == 0xA1:  # CRLs: allowed, not returned
        pos = _next(data, pos, signed_end, 0xA1, "[1] crls")[1]
    signers, pos = _next(data, pos, signed_end, der.SET, "signerInfos")
    if signers != pos:
        raise _malformed("it carries signatures")
    if pos != signed_end:
        raise _malformed("bytes follow the signerInfos")
    if not certs:
        raise _malformed("it holds no certificate")
    return certs


def _attribute(type_oid: str, *values: bytes) -> bytes:
    return der.sequence(der.oid(type_oid), der.set_of(*values))


_KEY_ATTRIBUTES: Final = {
    KeyType.ECDSA_P256: (_attribute(_OID_EC_PUBLIC_KEY, der.oid(_OID_SECP256R1)),
                         OID_ECDSA_SHA256),
    KeyType.ECDSA_P384: (_attribute(_OID_EC_PUBLIC_KEY, der.oid(_OID_SECP384R1)),
                         OID_ECDSA_SHA384),
    KeyType.RSA_3072: (_attribute(_OID_RSA_ENCRYPTION, der.integer(3072)), OID_RSA_SHA256),
}


def csr_attributes(*, key_type: KeyType, require_cn: bool,
                   require_serial_number: bool) -> bytes:
    """A DER ``CsrAttrs`` (RFC 7030 4.5.2): the key the CA expects, as an attribute naming
    its algorithm and curve (or RSA size), the signature algorithm the CSR should use, and
    the subject attribute types it must carry (commonName, serialNumber)."""
    key, signature = _KEY_ATTRIBUTES[key_type]
    items = [key, der.oid(signature)]
    if require_cn:
        items.append(der.oid(OID_CN))
    if require_serial_number:
        items.append(der.oid(OID_SERIAL_NUMBER))
    return der.sequence(*items)


def serverkeygen_body(key_pkcs8_der: bytes, certs_der: bytes) -> tuple[str, bytes]:
    """(Content-Type, body) of a serverkeygen answer (RFC 7030 4.4.2): ``multipart/mixed``
    with the private key (``application/pkcs8``) then the certificate as a certs-only
    PKCS#7, each part base64 with ``Content-Transfer-Encoding: base64``."""
    crlf = b"\r\n"
    boundary = SERVERKEYGEN_BOUNDARY.encode("ascii")
    parts = ((CONTENT_PKCS8, key_pkcs8_der), (CONTENT_PKCS7_CERTS, certs_der))
    body = b"".join(
        b"--" + boundary + crlf
        + b"Content-Type: " + content_type.encode("ascii") + crlf
        + b"Content-Transfer-Encoding: base64" + crlf + crlf
        + _base64_lines(payload, crlf)
        for content_type, payload in parts)
    body += b"--" + boundary + b"--" + crlf
    return f"multipart/mixed; boundary={SERVERKEYGEN_BOUNDARY}", body
