"""OCSP (RFC 6960) on the client's side: a request for one certificate with a nonce, and
the verification of the answer.

:func:`verify_response` raises :class:`~iotsec.errors.OcspResponseError` unless every
check holds: a successful basic response of at most :data:`MAX_RESPONSE_BYTES`, signed by
the CA itself or by a responder certificate the CA issued with the OCSPSigning extended
key usage and valid now (RFC 6960 4.2.2.2), answering for the very CertID asked about,
with the nonce sent echoed, thisUpdate not in the future and nextUpdate not past (with
:data:`CLOCK_SKEW` allowed either way).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from iotsec.errors import OcspResponseError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.ocsp import (
    OID_NONCE,
    OID_OCSP_BASIC,
    OID_OCSP_SIGNING,
    CertId,
    CertStatus,
    DerReader,
    ResponseStatus,
    responder_key_hash,
)

__all__ = ["CLOCK_SKEW", "MAX_RESPONSE_BYTES", "CheckedStatus", "build_request", "new_nonce",
           "verify_response"]

MAX_RESPONSE_BYTES = 1024 * 1024
CLOCK_SKEW = timedelta(minutes=5)

_HASH_OF_SIG: dict[str, hashes.HashAlgorithm | None] = {
    "1.2.840.10045.4.3.2": hashes.SHA256(), "1.2.840.10045.4.3.3": hashes.SHA384(),
    "1.2.840.10045.4.3.4": hashes.SHA512(), "1.2.840.113549.1.1.11": hashes.SHA256(),
    "1.2.840.113549.1.1.12": hashes.SHA384(), "1.2.840.113549.1.1.13": hashes.SHA512(),
    "1.3.101.112": None,
}


def new_nonce() -> bytes:
    """A fresh nonce: 16 random octets (what OpenSSL sends), as the extension value."""
    return der.octet_string(secrets.token_bytes(16))


def build_request(cert_id: CertId, nonce: bytes | None) -> bytes:
    """A DER OCSPRequest for one certificate, unsigned, with the nonce extension value
    ``nonce`` (see :func:`new_nonce`) when given."""
    tbs = [der.sequence(der.sequence(cert_id.der))]
    if nonce is not None:
        tbs.append(der.explicit(2, der.sequence(enc.extension(OID_NONCE, nonce))))
    return der.sequence(der.sequence(*tbs))


@dataclass(frozen=True, slots=True)
class CheckedStatus:
    """A verified answer for one certificate."""

    serial: int
    status: CertStatus
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    revoked_at: datetime | None
    reason: RevocationReason | None
    #: "ca" when the CA signed the answer itself, else "delegated".
    signed_by: str
    responder: str
    nonce_checked: bool


def _time(r: DerReader, tag: int, start: int, end: int) -> datetime:
    if tag != der.GENERALIZED_TIME:
        raise r.fail("OCSP times are GeneralizedTime")
    text = r.data[start:end].decode("ascii", "replace")
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise r.fail(f"malformed GeneralizedTime {text[:20]!r}") from None


def _verify(key: PublicKeyTypes, sig_oid: str, signature: bytes,
            data: bytes) -> None:
    digest = _HASH_OF_SIG.get(sig_oid)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and digest is not None \
                and sig_oid.startswith("1.2.840.10045"):
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, rsa.RSAPublicKey) and digest is not None \
                and sig_oid.startswith("1.2.840.113549"):
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(key, ed25519.Ed25519PublicKey) and sig_oid == "1.3.101.112":
            key.verify(signature, data)
        else:
            raise OcspResponseError(f"the response is signed with {sig_oid}, which does not "
                                    "match the responder's key")
    except InvalidSignature:
        raise OcspResponseError("the OCSP response's signature does not verify",
                                hint="the answer was altered or signed by another key; "
                                     "do not trust it") from None


def _authorised(ca: x509.Certificate, certs: list[x509.Certificate], by_key: bytes | None,
                by_name: bytes | None, now: datetime) -> tuple[PublicKeyTypes, str, str]:
    """The key that must have signed, and who holds it (RFC 6960 4.2.2.2)."""
    ca_spki = enc.spki_der(ca.public_key())
    if by_key == responder_key_hash(ca_spki) or by_name == ca.subject.public_bytes():
        return ca.public_key(), "ca", ca.subject.rfc4514_string()
    for cert in certs:
        spki = enc.spki_der(cert.public_key())
        if by_key != responder_key_hash(spki) and by_name != cert.subject.public_bytes():
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise OcspResponseError("the responder certificate was not issued by the CA of "
                                    "the certificate asked about") from None
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = x509.ExtendedKeyUsage([])
        if x509.ObjectIdentifier(OID_OCSP_SIGNING) not in eku:
            raise OcspResponseError("the responder certificate lacks the OCSPSigning "
                                    "extended key usage: the CA did not delegate OCSP to it")
        if not cert.not_valid_before_utc - CLOCK_SKEW <= now <= cert.not_valid_after_utc:
            raise OcspResponseError("the responder certificate is not valid now",
                                    hint="the responder should rotate it; check the clocks")
        return cert.public_key(), "delegated", cert.subject.rfc4514_string()
    raise OcspResponseError("the response is signed by neither the CA nor a responder "
                            "certificate it carries")


def verify_response(data: bytes, *, ca: x509.Certificate, cert_id: CertId,
                    nonce: bytes | None, now: datetime) -> CheckedStatus:
    """Verify an OCSPResponse to a request for ``cert_id`` (a certificate of ``ca``) made
    with ``nonce``, and return the certificate's status."""
    if len(data) > MAX_RESPONSE_BYTES:
        raise OcspResponseError(f"the OCSP response is over {MAX_RESPONSE_BYTES} octets")
    r = DerReader(data, OcspResponseError)
    _, start, end = r.read(0, len(data), der.SEQUENCE)
    outer = r.children(start, end)
    if end != len(data) or not outer or outer[0][0] != der.ENUMERATED:
        raise r.fail("not an OCSPResponse")
    code = r.integer(outer[0][1], outer[0][2])
    if code != ResponseStatus.successful:
        name = ResponseStatus(code).name if code in set(ResponseStatus) else str(code)
        raise OcspResponseError(f"the responder answered {name} ({code})",
                                hint="unauthorized: it does not serve this CA; "
                                     "malformedRequest: it could not read the request; "
                                     "tryLater/internalError: ask again later")
    if len(outer) != 2 or outer[1][0] != 0xA0:
        raise r.fail("a successful OCSPResponse carries responseBytes")
    _, rb_start, rb_end = r.read(outer[1][1], outer[1][2], der.SEQUENCE)
    rb = r.children(rb_start, rb_end)
    if len(rb) != 2 or rb[0][0] != der.OBJECT_IDENTIFIER or rb[1][0] != der.OCTET_STRING \
            or r.oid(rb[0][1], rb[0][2]) != OID_OCSP_BASIC:
        raise r.fail("the response is not a basic OCSP response")
    _, b_start, b_end = r.read(rb[1][1], rb[1][2], der.SEQUENCE)
    basic = r.children(b_start, b_end)
    if not 3 <= len(basic) <= 4 or [b[0] for b in basic[:3]] != [
            der.SEQUENCE, der.SEQUENCE, der.BIT_STRING]:
        raise r.fail("malformed BasicOCSPResponse")
    tbs = data[basic[0][3]:basic[0][2]]
    sig_alg = r.children(basic[1][1], basic[1][2])
    if not sig_alg or sig_alg[0][0] != der.OBJECT_IDENTIFIER:
        raise r.fail("malformed signature algorithm")
    sig_oid = r.oid(sig_alg[0][1], sig_alg[0][2])
    signature = data[basic[2][1] + 1:basic[2][2]]
    certs: list[x509.Certificate] = []
    if len(basic) == 4:
        _, c_start, c_end = r.read(basic[3][1], basic[3][2], der.SEQUENCE)
        for _, _, e, pos in r.children(c_start, c_end):
            try:
                certs.append(x509.load_der_x509_certificate(data[pos:e]))
            except ValueError:
                raise r.fail("a certificate in the response does not parse") from None
    fields = r.children(basic[0][1], basic[0][2])
    if fields and fields[0][0] == 0xA0:
        fields = fields[1:]
    if len(fields) < 3 or fields[0][0] not in (0xA1, 0xA2) or fields[2][0] != der.SEQUENCE:
        raise r.fail("malformed ResponseData")
    by_key = by_name = None
    if fields[0][0] == 0xA2:
        _, k_start, k_end = r.read(fields[0][1], fields[0][2], der.OCTET_STRING)
        by_key = data[k_start:k_end]
    else:
        by_name = data[fields[0][1]:fields[0][2]]
    produced_at = _time(r, fields[1][0], fields[1][1], fields[1][2])
    key, signed_by, responder = _authorised(ca, certs, by_key, by_name, now)
    _verify(key, sig_oid, signature, tbs)
    echoed = None
    if len(fields) > 3 and fields[3][0] == 0xA1:
        _, x_start, x_end = r.read(fields[3][1], fields[3][2], der.SEQUENCE)
        for _, s, e, _ in r.children(x_start, x_end):
            ext = r.children(s, e)
            if ext and ext[0][0] == der.OBJECT_IDENTIFIER and \
                    r.oid(ext[0][1], ext[0][2]) == OID_NONCE:
                echoed = data[ext[-1][1]:ext[-1][2]]
    if nonce is not None and echoed != nonce:
        raise OcspResponseError("the response does not echo the request's nonce" if echoed
                                is None else "the response's nonce is not the one sent",
                                hint="it may be a replayed answer; do not trust it")
    for _, s, e, _ in r.children(fields[2][1], fields[2][2]):
        single = r.children(s, e)
        if len(single) < 3 or single[0][0] != der.SEQUENCE:
            raise r.fail("malformed SingleResponse")
        ids = r.children(single[0][1], single[0][2])
        if len(ids) != 4 or data[ids[1][1]:ids[1][2]] != cert_id.issuer_name_hash \
                or data[ids[2][1]:ids[2][2]] != cert_id.issuer_key_hash \
                or r.integer(ids[3][1], ids[3][2]) != cert_id.serial:
            continue
        return _single(r, single, cert_id, produced_at, signed_by, responder, now,
                       nonce is not None)
    raise OcspResponseError("the response does not answer for the certificate asked about")


def _single(r: DerReader, single: list[tuple[int, int, int, int]], cert_id: CertId,
            produced_at: datetime, signed_by: str, responder: str, now: datetime,
            nonce_checked: bool) -> CheckedStatus:
    tag, s, e, _ = single[1]
    revoked_at = reason = None
    if tag == 0x80:
        status = CertStatus.good
    elif tag == 0x82:
        status = CertStatus.unknown
    elif tag == 0xA1:
        status = CertStatus.revoked
        info = r.children(s, e)
        if not info:
            raise r.fail("malformed RevokedInfo")
        revoked_at = _time(r, info[0][0], info[0][1], info[0][2])
        reason = RevocationReason.unspecified
        if len(info) > 1 and info[1][0] == 0xA0:
            _, c_start, c_end = r.read(info[1][1], info[1][2], der.ENUMERATED)
            code = r.integer(c_start, c_end)
            if code not in set(RevocationReason):
                raise r.fail(f"unknown revocation reason {code}")
            reason = RevocationReason(code)
    else:
        raise r.fail("malformed CertStatus")
    this_update = _time(r, single[2][0], single[2][1], single[2][2])
    next_update = None
    if len(single) > 3 and single[3][0] == 0xA0:
        t, t_start, t_end = r.read(single[3][1], single[3][2])
        next_update = _time(r, t, t_start, t_end)
    if this_update > now + CLOCK_SKEW:
        raise OcspResponseError("the response's thisUpdate is in the future",
                                hint="check this machine's clock and the responder's")
    if next_update is not None and next_update < now - CLOCK_SKEW:
        raise OcspResponseError("the response is past its nextUpdate: stale",
                                hint="the responder serves an old answer; ask it again later")
    return CheckedStatus(serial=cert_id.serial, status=status, this_update=this_update,
                         next_update=next_update, produced_at=produced_at,
                         revoked_at=revoked_at, reason=reason, signed_by=signed_by,
                         responder=responder, nonce_checked=nonce_checked)
