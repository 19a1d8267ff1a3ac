"""OCSP (RFC 6960) on the responder's side: a bounded parser of OCSPRequest and a builder
of OCSPResponse / BasicOCSPResponse, signed through any :class:`~iotsec.pki.keys.Signer`.

The parser states its limits before it reads: at most :data:`MAX_REQUEST_BYTES` of DER, at
most :data:`MAX_CERT_IDS` certificates per request, CertIDs hashed with SHA-1 or SHA-256
only, a nonce (id-pkix-ocsp-nonce) of 1 to 32 octets (RFC 8954). Everything else that is
not DER as RFC 6960 4.1 writes it is refused with :class:`~iotsec.errors.OcspRequestError`,
which the responder answers with ``malformedRequest``. A request signature
(optionalSignature) is accepted and not checked: iotsec answers anyone, as RFC 5019 2.1.1
allows, and a signed answer reveals only what the CRL publishes too.

The builder encodes the response by hand, like the CRL (:mod:`iotsec.pki.crl`): the CertID
of each answer is the requester's own encoding, echoed byte for byte (RFC 6960 4.2.1), the
responder is named by key (RFC 5019 2.2.3), and all times are GeneralizedTime (RFC 6960
4.2.1, unlike certificates).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from iotsec.errors import OcspRequestError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.keys import Signer

__all__ = [
    "HASHES", "MAX_CERT_IDS", "MAX_NONCE", "MAX_REQUEST_BYTES", "OID_NOCHECK", "OID_NONCE",
    "OID_OCSP_BASIC", "OID_OCSP_SIGNING", "CertId", "CertStatus", "DerReader", "OcspRequest",
    "ResponseStatus", "SingleAnswer", "build_response", "error_response", "generalized_time",
    "issuer_hashes", "parse_request", "public_key_bits", "responder_key_hash"
]

#: The largest OCSPRequest read (RFC 5019 requests are about 100 octets).
MAX_REQUEST_BYTES = 64 * 1024
#: Certificates asked about in one request at most (RFC 5019 clients ask about one).
MAX_CERT_IDS = 16
#: The longest nonce accepted (RFC 8954 2.1).
MAX_NONCE = 32

OID_OCSP_BASIC = "1.3.6.1.5.5.7.48.1.1"
OID_NONCE = "1.3.6.1.5.5.7.48.1.2"
OID_NOCHECK = "1.3.6.1.5.5.7.48.1.5"
OID_OCSP_SIGNING = "1.3.6.1.5.5.7.3.9"
_SHA1 = "1.3.14.3.2.26"
_SHA256 = "2.16.840.1.101.3.4.2.1"
#: CertID hash algorithms: object identifier -> hashlib name.
HASHES: dict[str, str] = {_SHA1: "sha1", _SHA256: "sha256"}
_OID_BY_HASH = {name: oid for oid, name in HASHES.items()}


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 4.2.1); 4 is not used."""

    successful = 0
    malformedRequest = 1
    internalError = 2
    tryLater = 3
    sigRequired = 5
    unauthorized = 6


class CertStatus(enum.StrEnum):
    good = "good"
    revoked = "revoked"
    unknown = "unknown"


class DerReader:
    """Walks DER strictly (minimal lengths, nothing left over), raising ``error``."""

    def __init__(self, data: bytes, error: type[Exception] = OcspRequestError) -> None:
        self.data = data
        self._error = error

    def fail(self, message: str) -> Exception:
        return self._error(message)

    def read(self, pos: int, end: int, tag: int | None = None) -> tuple[int, int, int]:
        """(tag, content start, content end) of the element at ``pos``; with ``tag``, it
        must be that one."""
        found, start, stop = der.element(self.data, pos, end, minimal=True, error=self.fail)
        if tag is not None and found != tag:
            raise self.fail(f"expected DER tag 0x{tag:02x}, found 0x{found:02x}")
        return found, start, stop

    def children(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(tag, content start, content end, element start) of each element in a
        constructed value's content."""
        out = []
        pos = start
        while pos < end:
            tag, s, e = self.read(pos, end)
            out.append((tag, s, e, pos))
            pos = e
        return out

    def oid(self, start: int, end: int) -> str:
        body = self.data[start:end]
        if not body or body[-1] & 0x80 or body[0] == 0x80:
            raise self.fail("malformed object identifier")
        arcs: list[int] = []
        value = 0
        for octet in body:
            value = (value << 7) | (octet & 0x7F)
            if not octet & 0x80:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])

    def integer(self, start: int, end: int) -> int:
        body = self.data[start:end]
        if not body or (len(body) > 1 and ((body[0] == 0 and not body[1] & 0x80)
                                           or (body[0] == 0xFF and body[1] & 0x80))):
            raise self.fail("malformed INTEGER")
        return int.from_bytes(body, "big", signed=True)


@dataclass(frozen=True, slots=True)
class CertId:
    """One certificate asked about: the hash of its issuer's name and key, its serial, and
    the requester's encoding of all that (echoed in the answer)."""

    hash_name: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes

    @classmethod
    def for_certificate(cls, issuer_subject: bytes, issuer_spki: bytes, serial: int,
                        hash_name: str = "sha1") -> CertId:
        """The CertID of certificate ``serial`` of the CA with the DER subject and
        SubjectPublicKeyInfo given."""
        name_hash, key_hash = issuer_hashes(issuer_subject, issuer_spki, hash_name)
        encoded = der.sequence(der.sequence(der.oid(_OID_BY_HASH[hash_name]), der.null()),
                               der.octet_string(name_hash), der.octet_string(key_hash),
                               der.integer(serial))
        return cls(hash_name, name_hash, key_hash, serial, encoded)


@dataclass(frozen=True, slots=True)
class OcspRequest:
    cert_ids: tuple[CertId, ...]
    #: The nonce extension's extnValue, as sent (echoed verbatim), or None.
    nonce: bytes | None


def public_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey BIT STRING's value (without its unused-bits octet) of a DER
    SubjectPublicKeyInfo: what issuerKeyHash and responder key hashes are taken over."""
    r = DerReader(spki, ValueError)
    _, start, end = r.read(0, len(spki), der.SEQUENCE)
    _, _, alg_end = r.read(start, end, der.SEQUENCE)
    _, bits_start, bits_end = r.read(alg_end, end, der.BIT_STRING)
    return spki[bits_start + 1:bits_end]


def issuer_hashes(subject: bytes, spki: bytes, hash_name: str) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CA for a CertID hashed with ``hash_name``."""
    return (hashlib.new(hash_name, subject, usedforsecurity=False).digest(),
            hashlib.new(hash_name, public_key_bits(spki), usedforsecurity=False).digest())


def responder_key_hash(spki: bytes) -> bytes:
    """KeyHash of a responder (RFC 6960 4.2.1): SHA-1 of its public key bits."""
    return hashlib.sha1(public_key_bits(spki), usedforsecurity=False).digest()


def _cert_id(r: DerReader, start: int, end: int, pos: int) -> CertId:
    parts = r.children(start, end)
    if len(parts) != 4 or [p[0] for p in parts] != [
            der.SEQUENCE, der.OCTET_STRING, der.OCTET_STRING, der.INTEGER]:
        raise r.fail("a CertID is SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, "
                     "serialNumber }")
    alg = r.children(parts[0][1], parts[0][2])
    if not alg or alg[0][0] != der.OBJECT_IDENTIFIER or len(alg) > 2 or (
            len(alg) == 2 and (alg[1][0] != der.NULL or alg[1][1] != alg[1][2])):
        raise r.fail("malformed CertID hash AlgorithmIdentifier")
    oid = r.oid(alg[0][1], alg[0][2])
    name = HASHES.get(oid)
    if name is None:
        raise OcspRequestError(f"CertID hash algorithm {oid} is not supported",
                               hint="hash CertIDs with SHA-1 or SHA-256")
    size = hashlib.new(name).digest_size
    name_hash = r.data[parts[1][1]:parts[1][2]]
    key_hash = r.data[parts[2][1]:parts[2][2]]
    if len(name_hash) != size or len(key_hash) != size:
        raise r.fail(f"CertID hashes must be {size} octets for {name}")
    serial = r.integer(parts[3][1], parts[3][2])
    if serial <= 0 or parts[3][2] - parts[3][1] > 20:
        raise r.fail("a certificate serial number is positive and at most 20 octets")
    return CertId(name, name_hash, key_hash, serial, r.data[pos:end])


def _nonce(r: DerReader, start: int, end: int) -> bytes | None:
    """The nonce extension's extnValue in an Extensions SEQUENCE, if there is one."""
    nonce = None
    seen: set[str] = set()
    for tag, s, e, _ in r.children(start, end):
        if tag != der.SEQUENCE:
            raise r.fail("malformed request extension")
        fields = r.children(s, e)
        if not 2 <= len(fields) <= 3 or fields[0][0] != der.OBJECT_IDENTIFIER \
                or fields[-1][0] != der.OCTET_STRING \
                or (len(fields) == 3 and fields[1][0] != der.BOOLEAN):
            raise r.fail("malformed request extension")
        oid = r.oid(fields[0][1], fields[0][2])
        if oid in seen:
            raise r.fail(f"request extension {oid} appears twice")
        seen.add(oid)
        value = r.data[fields[-1][1]:fields[-1][2]]
        if oid == OID_NONCE:
            # RFC 8954: the value is an OCTET STRING of 1 to 32 octets; some clients put
            # the bare octets there instead, which are held to the same length.
            inner = value
            if value[:1] == bytes((der.OCTET_STRING,)):
                try:
                    _, i_start, i_end = DerReader(value).read(0, len(value), der.OCTET_STRING)
                    if i_end == len(value):
                        inner = value[i_start:i_end]
                except OcspRequestError:
                    inner = value
            if not 1 <= len(inner) <= MAX_NONCE:
                raise OcspRequestError(f"the nonce is {len(inner)} octets; RFC 8954 allows 1 "
                                       f"to {MAX_NONCE}", hint="send a nonce of 32 octets or "
                                       "fewer")
            nonce = value
        elif len(fields) == 3 and r.data[fields[1][1]:fields[1][2]] == b"\xff":
            raise OcspRequestError(f"unsupported critical request extension {oid}",
                                   hint="send only the nonce extension as critical")
    return nonce


def parse_request(data: bytes) -> OcspRequest:
    """Parse a DER OCSPRequest (RFC 6960 4.1.1) within the limits stated above."""
    if len(data) > MAX_REQUEST_BYTES:
        raise OcspRequestError(f"the OCSP request is {len(data)} octets; at most "
                               f"{MAX_REQUEST_BYTES} are read",
                               hint="ask about fewer certificates per request")
    r = DerReader(data)
    _, start, end = r.read(0, len(data), der.SEQUENCE)
    if end != len(data):
        raise r.fail("data after the OCSPRequest")
    outer = r.children(start, end)
    if not 1 <= len(outer) <= 2 or outer[0][0] != der.SEQUENCE or (
            len(outer) == 2 and outer[1][0] != 0xA0):
        raise r.fail("an OCSPRequest is SEQUENCE { tbsRequest, [0] optionalSignature }")
    fields = r.children(outer[0][1], outer[0][2])
    index = 0
    if index < len(fields) and fields[index][0] == 0xA0:
        _, v_start, v_end = r.read(fields[index][1], fields[index][2], der.INTEGER)
        if v_end != fields[index][2] or r.integer(v_start, v_end) != 0:
            raise r.fail("only OCSP request version 1 is known")
        index += 1
    if index < len(fields) and fields[index][0] == 0xA1:
        index += 1  # requestorName: who asks does not change the answer
    if index >= len(fields) or fields[index][0] != der.SEQUENCE:
        raise r.fail("the OCSP request has no requestList")
    requests = r.children(fields[index][1], fields[index][2])
    index += 1
    nonce = None
    if index < len(fields) and fields[index][0] == 0xA2:
        _, x_start, x_end = r.read(fields[index][1], fields[index][2], der.SEQUENCE)
        if x_end != fields[index][2]:
            raise r.fail("malformed requestExtensions")
        nonce = _nonce(r, x_start, x_end)
        index += 1
    if index != len(fields):
        raise r.fail("unexpected fields in the TBSRequest")
    if not requests:
        raise r.fail("the OCSP request asks about no certificate")
    if len(requests) > MAX_CERT_IDS:
        raise OcspRequestError(f"the OCSP request asks about {len(requests)} certificates; "
                               f"at most {MAX_CERT_IDS} are answered at once",
                               hint="split the request")
    cert_ids = []
    for tag, s, e, _ in requests:
        if tag != der.SEQUENCE:
            raise r.fail("malformed Request")
        parts = r.children(s, e)
        if not 1 <= len(parts) <= 2 or parts[0][0] != der.SEQUENCE or (
                len(parts) == 2 and parts[1][0] != 0xA0):
            raise r.fail("a Request is SEQUENCE { reqCert, [0] singleRequestExtensions }")
        if len(parts) == 2:
            _, x_start, x_end = r.read(parts[1][1], parts[1][2], der.SEQUENCE)
            _nonce(r, x_start, x_end)  # checked for form and criticality, nothing used
        cert_ids.append(_cert_id(r, parts[0][1], parts[0][2], parts[0][3]))
    return OcspRequest(tuple(cert_ids), nonce)


def generalized_time(moment: datetime) -> bytes:
    """GeneralizedTime in Zulu with whole seconds (RFC 6960 and RFC 5280 4.1.2.5.2)."""
    text = moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")
    return der.tlv(der.GENERALIZED_TIME, text.encode("ascii"))


@dataclass(frozen=True, slots=True)
class SingleAnswer:
    """What the responder says of one certificate."""

    cert_id: CertId
    status: CertStatus
    this_update: datetime
    next_update: datetime
    revoked_at: datetime | None = None
    reason: RevocationReason | None = None

    def encode(self) -> bytes:
        if self.status is CertStatus.good:
            status = b"\x80\x00"
        elif self.status is CertStatus.unknown:
            status = b"\x82\x00"
        else:
            if self.revoked_at is None:
                raise ValueError("a revoked answer needs its revocation time")
            info = generalized_time(self.revoked_at)
            # RFC 5280 5.3.1: a reason of unspecified is left out, as in the CRL.
            if self.reason is not None and self.reason is not RevocationReason.unspecified:
                info += der.explicit(0, der.enumerated(int(self.reason)))
            status = der.tlv(0xA1, info)
        return der.sequence(self.cert_id.der, status, generalized_time(self.this_update),
                            der.explicit(0, generalized_time(self.next_update)))


def error_response(status: ResponseStatus) -> bytes:
    """An unsuccessful OCSPResponse: the status alone, no responseBytes (RFC 6960 4.2.1)."""
    if status is ResponseStatus.successful:
        raise ValueError("a successful response carries a signed answer")
    return der.sequence(der.enumerated(int(status)))


def build_response(signer: Signer, answers: Sequence[SingleAnswer], *, produced_at: datetime,
                   nonce: bytes | None = None, certs: Sequence[bytes] = ()) -> bytes:
    """A successful OCSPResponse with a BasicOCSPResponse signed by ``signer``, named by
    its key hash, carrying ``certs`` (the delegated responder's certificate) and, when the
    request had one, its nonce extension value echoed."""
    if not answers:
        raise ValueError("a response answers at least one certificate")
    key_hash = responder_key_hash(enc.spki_der(signer.public_key()))
    parts = [der.explicit(2, der.octet_string(key_hash)), generalized_time(produced_at),
             der.sequence(*(a.encode() for a in answers))]
    if nonce is not None:
        parts.append(der.explicit(1, der.sequence(enc.extension(OID_NONCE, nonce))))
    tbs = der.sequence(*parts)
    basic = [tbs, enc.signature_algorithm(signer.key_type), der.bit_string(signer.sign(tbs))]
    if certs:
        basic.append(der.explicit(0, der.sequence(*certs)))
    body = der.sequence(der.oid(OID_OCSP_BASIC), der.octet_string(der.sequence(*basic)))
    return der.sequence(der.enumerated(int(ResponseStatus.successful)), der.explicit(0, body))
